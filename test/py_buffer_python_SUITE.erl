%% erlang.PyBuffer from the Python side: one unittest behaviour suite run
%% against io.BytesIO and erlang.PyBuffer (test/python/buffer_behaviour.py),
%% and a hypothesis model test comparing PyBuffer with a BytesIO model
%% (test/python/buffer_model.py).
%%
%% Python cannot create buffers, so the suite starts a writer process that
%% serves Python's requests (sent with erlang.send):
%%
%%   {<<"new">>, Opts}          py_buffer:new(Opts); the buffer is handed to
%%                              Python by a py:call on another context
%%                              (buffer_behaviour.deliver/1)
%%   {<<"write">>, Buf, Data}   py_buffer:write/2
%%   {<<"close">>, Buf}         py_buffer:close/1
%%   {<<"abort">>, Buf, Reason} py_buffer:abort/2 (Reason names an atom below)
%%   {<<"info">>, Buf}          py_buffer:info/1, delivered like a new buffer
%%   {<<"later">>, Buf, Ops}    a helper process runs Ops ([{<<"sleep">>, Ms},
%%                              {<<"write">>, Data}, {<<"close">>},
%%                              {<<"abort">>, Reason}]) while Python reads
%%
%% The writer creates every buffer, so it is their monitored owner.  It
%% acknowledges each request by writing one byte into the "ack" buffer,
%% which Python reads before going on: every interleaving is deterministic.
%% The byte tells the result: k ok, c {error, closed}, o {error, overflow},
%% t {error, timeout}, m {error, enomem}, b badarg.
-module(py_buffer_python_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-compile([export_all, nowarn_export_all]).

-define(MAIN_CTX, 1).
-define(DELIVER_CTX, 2).
-define(TIMEOUT, 300000).

all() ->
    [behaviour_bytesio_and_pybuffer, model_pybuffer_against_bytesio,
     async_reader_behaviour, many_idle_async_readers, many_idle_async_readers_uvloop].

init_per_suite(Config) ->
    Config1 = erlpy_test:start(Config),
    ?assert(py:contexts() >= 2),
    Config1.

end_per_suite(Config) ->
    erlpy_test:stop(Config).

init_per_testcase(model_pybuffer_against_bytesio, Config) ->
    case erlpy_test:need_python_module(hypothesis, Config) of
        {skip, _} = Skip -> Skip;
        _ -> [{writer, start_writer()} | Config]
    end;
init_per_testcase(many_idle_async_readers_uvloop, Config) ->
    erlpy_test:need_python_module(uvloop, Config);
init_per_testcase(many_idle_async_readers, Config) ->
    Config;
init_per_testcase(_Case, Config) ->
    Writer = start_writer(),
    [{writer, Writer} | Config].

end_per_testcase(Case, _Config) when Case =:= many_idle_async_readers;
                                      Case =:= many_idle_async_readers_uvloop ->
    ok;
end_per_testcase(_Case, Config) ->
    {Pid, Mon} = ?config(writer, Config),
    Pid ! stop,
    receive {'DOWN', Mon, process, Pid, _} -> ok after 5000 -> exit(Pid, kill) end.

behaviour_bytesio_and_pybuffer(Config) ->
    run_python(buffer_behaviour, Config, 90).

model_pybuffer_against_bytesio(Config) ->
    run_python(buffer_model, Config, 1).

%% PyBuffer.async_reader against asyncio.StreamReader, on asyncio's loop and
%% on uvloop (its classes skip where uvloop is missing).
async_reader_behaviour(Config) ->
    run_python(async_behaviour, Config, 40).

%% 10,000 readers wait on 10,000 buffers in one loop: the loop thread uses
%% (almost) no CPU while nothing arrives, then every read completes.
many_idle_async_readers(_Config) ->
    many_idle(<<"asyncio">>).

many_idle_async_readers_uvloop(_Config) ->
    many_idle(<<"uvloop">>).

many_idle(Loop) ->
    N = 10000,
    Bufs = [begin {ok, B} = py_buffer:new(), B end || _ <- lists:seq(1, N)],
    Self = self(),
    Caller = spawn_link(fun() ->
                                Self ! {result, py:call(py:context(?MAIN_CTX), async_behaviour, many_idle,
                                                        [Bufs, Self, Loop], #{}, #{timeout => ?TIMEOUT})}
                        end),
    receive {armed, Waiting} -> ?assertEqual(N, Waiting) after ?TIMEOUT -> ct:fail(not_armed) end,
    [begin ok = py_buffer:write(B, <<"abc">>), ok = py_buffer:close(B) end || B <- Bufs],
    receive
        {result, {ok, #{<<"all_read">> := AllRead, <<"idle_cpu">> := Cpu}}} ->
            ct:log("~s: ~b idle readers, loop thread CPU over 0.5 s idle: ~.4f s", [Loop, N, Cpu]),
            ?assert(AllRead),
            %% a poll per reader would cost far more: this bound is CPU, not time
            ?assert(Cpu < 0.05),
            unlink(Caller),
            {comment, io_lib:format("idle CPU ~.4f s", [Cpu])};
        {result, Other} ->
            ct:fail({many_idle_failed, Other})
    after ?TIMEOUT -> ct:fail(no_result)
    end.

%% ------------------------------------------------------------------ running

%% Runs Module.run(writer, ack) and fails with the unittest output unless
%% every test passed and at least MinTests ran.
run_python(Module, Config, MinTests) ->
    {Writer, Mon} = ?config(writer, Config),
    Ack = ack_buffer(Writer),
    T0 = erlang:monotonic_time(millisecond),
    Reply = py:call(py:context(?MAIN_CTX), Module, run, [Writer, Ack], #{},
                    #{timeout => ?TIMEOUT}),
    Ms = erlang:monotonic_time(millisecond) - T0,
    receive
        {'DOWN', Mon, process, Writer, Why} -> ct:fail({writer_died, Why})
    after 0 -> ok
    end,
    case Reply of
        {ok, #{<<"tests">> := Tests, <<"failures">> := F, <<"errors">> := E,
               <<"skipped">> := S, <<"output">> := Out} = R} ->
            ct:log("~ts", [Out]),
            Extra = maps:get(<<"examples">>, R, undefined),
            Known = maps:get(<<"expected_failures">>, R, 0),
            Summary = io_lib:format("~b tests, ~b failures, ~b errors, ~b skipped, "
                                    "~b known bugs (expected failures)~s, ~b ms",
                                    [Tests, F, E, S, Known, examples_text(Extra), Ms]),
            ct:log("~s", [Summary]),
            (F =:= 0 andalso E =:= 0) orelse
                ct:fail("Python ~s: ~s~n~ts", [Module, Summary, Out]),
            Tests >= MinTests orelse
                ct:fail("Python ~s ran only ~b tests (expected at least ~b)~n~ts",
                        [Module, Tests, MinTests, Out]),
            check_examples(Module, Extra),
            {comment, lists:flatten(Summary)};
        Other ->
            ct:fail({python_run_failed, Module, Other})
    end.

examples_text(undefined) -> "";
examples_text(N) -> io_lib:format(", ~b hypothesis examples", [N]).

%% The model test must really have explored: hypothesis examples counted by
%% the state machine itself.
check_examples(buffer_model, N) when is_integer(N), N >= 50 -> ok;
check_examples(buffer_model, N) -> ct:fail({too_few_hypothesis_examples, N});
check_examples(_, _) -> ok.

ack_buffer(Writer) ->
    Writer ! {ack_buffer, self()},
    receive {ack_buffer, Ack} -> Ack after 5000 -> ct:fail(writer_unresponsive) end.

%% ------------------------------------------------------------------ the writer

start_writer() ->
    Self = self(),
    {Pid, Mon} = spawn_monitor(fun() ->
                                       %% Bounded memory: nothing is read twice.
                                       {ok, Ack} = py_buffer:new(#{keep_consumed => false, read_timeout => 60000}),
                                       Self ! {writer_ready, self()},
                                       writer_loop(Ack)
                               end),
    receive {writer_ready, Pid} -> {Pid, Mon} after 5000 -> ct:fail(writer_did_not_start) end.

writer_loop(Ack) ->
    receive
        stop ->
            ok;
        {ack_buffer, From} ->
            From ! {ack_buffer, Ack},
            writer_loop(Ack);
        Request ->
            ok = py_buffer:write(Ack, [code(handle(Request))]),
            writer_loop(Ack)
    end.

handle({<<"new">>, Opts}) ->
    case catch py_buffer:new(options(Opts)) of
        {ok, Buf} -> deliver(Buf);
        {error, _} = Error -> Error;
        {'EXIT', {badarg, _}} -> badarg
    end;
handle({<<"write">>, Buf, Data}) ->
    py_buffer:write(Buf, Data);
handle({<<"close">>, Buf}) ->
    py_buffer:close(Buf);
handle({<<"abort">>, Buf, Reason}) ->
    py_buffer:abort(Buf, reason(Reason));
handle({<<"info">>, Buf}) ->
    deliver(py_buffer:info(Buf));
handle({<<"later">>, Buf, Ops}) ->
    _ = spawn(fun() -> run_ops(Buf, Ops) end),
    ok;
handle(Other) ->
    ct:pal("writer: unknown request ~p", [Other]),
    badarg.

%% Hands a term to Python, on a context other than the one running the tests
%% (that one is blocked reading the ack buffer, GIL released).
deliver(Term) ->
    {ok, none} = py:call(py:context(?DELIVER_CTX), buffer_behaviour, deliver, [Term], #{},
                         #{timeout => 10000}),
    ok.

run_ops(_Buf, []) ->
    ok;
run_ops(Buf, [{<<"sleep">>, Ms} | Ops]) ->
    timer:sleep(Ms),
    run_ops(Buf, Ops);
run_ops(Buf, [{<<"write">>, Data} | Ops]) ->
    _ = py_buffer:write(Buf, Data),
    run_ops(Buf, Ops);
run_ops(Buf, [{<<"close">>} | Ops]) ->
    _ = py_buffer:close(Buf),
    run_ops(Buf, Ops);
run_ops(Buf, [{<<"abort">>, Reason} | Ops]) ->
    ok = py_buffer:abort(Buf, reason(Reason)),
    run_ops(Buf, Ops).

%% Python sends option names as strings; only known ones become atoms.
options(Opts) when is_map(Opts) ->
    maps:fold(fun(K, V, Acc) -> Acc#{option(K) => V} end, #{}, Opts).

option(<<"content_length">>) -> content_length;
option(<<"max_unread">>) -> max_unread;
option(<<"low_watermark">>) -> low_watermark;
option(<<"keep_consumed">>) -> keep_consumed;
option(<<"line_limit">>) -> line_limit;
option(<<"read_timeout">>) -> read_timeout;
option(<<"write_timeout">>) -> write_timeout.

reason(<<"client_gone">>) -> client_gone;
reason(<<"upstream_reset">>) -> upstream_reset.

code(ok) -> $k;
code({error, closed}) -> $c;
code({error, overflow}) -> $o;
code({error, timeout}) -> $t;
code({error, enomem}) -> $m;
code(badarg) -> $b.
