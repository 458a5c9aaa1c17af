%% Slow clients hold Erlang processes, not Python workers (issue 8, fault
%% 4): small request bodies are read before the app starts, responses are
%% advanced in steps on the worker that started them (which serves other
%% work in between), the body's close() runs once on that worker whatever
%% ends the response, and a server's share of the workers is capped.
%% Apps: test/python/slow_apps.py.
-module(erlpy_http_slow_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-compile([export_all, nowarn_export_all]).

all() ->
    [context_number, submit_replies_by_message,
     slow_clients_leave_server_answering, trickled_small_body_gets_408_without_app,
     slow_small_body_is_served, chunked_small_and_big, chunked_small_too_large,
     expect_small_body_answered_at_once,
     sqlite_while_iterating, streamed_as_produced, write_to_slow_reader, write_window_after_keep_alive,
     close_once_normal_end, close_once_client_gone,
     close_once_app_exception, close_once_server_stop, worker_cap_and_503, py_gate,
     gate_cancel_queued_holder, gate_churn_with_kills].

init_per_suite(Config) ->
    erlpy_test:start(Config).

end_per_suite(Config) ->
    erlpy_test:stop(Config).

init_per_testcase(_Case, Config) ->
    {ok, _} = py:eval(<<"__import__('slow_apps').events.clear()">>),
    Config.

end_per_testcase(_Case, _Config) ->
    ok.

%% ------------------------------------------------------------------ bridge

%% erlang.context() is the worker's context number, as py:context/1 takes it.
context_number(_Config) ->
    N = py:contexts(),
    [?assertEqual({ok, C}, py:eval(py:context(C), <<"__import__('erlang').context()">>, #{}))
     || C <- lists:seq(1, N)],
    {ok, Any} = py:eval(<<"__import__('erlang').context()">>),
    ?assert(Any >= 1 andalso Any =< N),
    %% Off the workers (a thread of its own) it is 0.
    ?assertEqual({ok, 0}, py:eval(<<"__import__('concurrent.futures').futures.ThreadPoolExecutor(1)"
                                    ".submit(__import__('erlang').context).result()">>)).

submit_replies_by_message(_Config) ->
    {ok, Ref} = py:submit(any, operator, add, [1, 2], #{}),
    receive {Ref, Reply} -> ?assertEqual({ok, 3}, Reply) after 10000 -> ct:fail(no_reply) end,
    {ok, Ref2} = py:submit(py:context(2), erlang, context, [], #{}),
    receive {Ref2, Reply2} -> ?assertEqual({ok, 2}, Reply2) after 10000 -> ct:fail(no_reply) end,
    ?assertEqual({error, no_context}, py:submit(py:context(100000), operator, add, [1, 2], #{})),
    ?assertError(badarg, py:submit(any, operator, add, not_a_list, #{})).

%% ------------------------------------------------------------------ slow clients

%% With default options: 200 clients trickling 64 KiB bodies (above
%% min_body_rate) and 200 clients reading an endless response at 300
%% bytes/s.  A normal GET and py:call(any, ...) still answer; no app has
%% seen a trickled body (they are read in Erlang first); every endless
%% body's close() runs once, on its thread, when its client leaves.
slow_clients_leave_server_answering(_Config) ->
    {ok, Srv} = erlpy_http:start(#{app => <<"slow_apps:app">>, port => 0}),
    Port = erlpy_http:port(Srv),
    Tricklers = [trickler(Port) || _ <- lists:seq(1, 200)],
    Readers = [slow_reader(Port, I) || I <- lists:seq(1, 200)],
    erlpy_test:wait_until(fun() -> count(<<"started">>) =:= 200 end, 60000),
    erlpy_test:wait_until(fun() -> erlpy_http:connections(Srv) >= 400 end, 60000),
    Times = [begin
                 T0 = erlang:monotonic_time(microsecond),
                 ?assertEqual({200, <<"Hello, World!">>}, get(Port, "/hello")),
                 T1 = erlang:monotonic_time(microsecond),
                 {ok, 3} = py:call(any, operator, add, [1, 2], #{}, #{timeout => 10000}),
                 {T1 - T0, erlang:monotonic_time(microsecond) - T1}
             end || _ <- lists:seq(1, 20)],
    ct:pal("with 200 tricklers and 200 slow readers: GET ~p us, py:call ~p us (medians); ~p",
           [median([G || {G, _} <- Times]), median([C || {_, C} <- Times]), py_nif:info()]),
    ?assertEqual(0, count(<<"body">>)),
    [exit(P, kill) || P <- Tricklers ++ Readers],
    erlpy_test:wait_until(fun() -> count(<<"closed">>) =:= 200 end, 60000),
    {ok, true} = py:eval(<<"all(__import__('slow_apps').same_thread('e%d' % i) for i in range(1, 201))">>),
    erlpy_http:stop(Srv).

%% A client sending a 64 KiB body at about 2.5 KiB/s, for ever.
trickler(Port) ->
    spawn(fun() ->
                  S = connect(Port),
                  ok = gen_tcp:send(S, <<"POST /sha256 HTTP/1.1\r\nHost: x\r\nContent-Length: 65536\r\n\r\n">>),
                  trickle(S)
          end).

trickle(S) ->
    case gen_tcp:send(S, binary:copy(<<"t">>, 512)) of
        ok -> timer:sleep(200), trickle(S);
        _ -> ok
    end.

%% A client reading an endless response at 300 bytes/s.
slow_reader(Port, I) ->
    spawn(fun() ->
                  {ok, S} = gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {active, false}, {recbuf, 4096}]),
                  ok = gen_tcp:send(S, ["GET /endless?key=e", integer_to_list(I), " HTTP/1.1\r\nHost: x\r\n\r\n"]),
                  read_slowly(S)
          end).

read_slowly(S) ->
    case gen_tcp:recv(S, 300, 60000) of
        {ok, _} -> timer:sleep(1000), read_slowly(S);
        _ -> ok
    end.

%% A small body trickled below min_body_rate: 408 from Erlang, and the app
%% never ran.
trickled_small_body_gets_408_without_app(_Config) ->
    {ok, Srv} = erlpy_http:start(#{app => <<"slow_apps:app">>, port => 0,
                                    body_timeout => 1000, min_body_rate => 1000}),
    S = connect(erlpy_http:port(Srv)),
    ok = gen_tcp:send(S, <<"POST /sha256 HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n">>),
    Trickle = spawn_link(fun Loop() -> _ = gen_tcp:send(S, <<"z">>), timer:sleep(300), Loop() end),
    {ok, Resp} = recv_all(S),
    unlink(Trickle),
    exit(Trickle, kill),
    ?assertMatch(<<"HTTP/1.1 408", _/binary>>, Resp),
    ?assertEqual(0, count(<<"body">>)),
    erlpy_http:stop(Srv).

%% A small body sent slowly but above the rate: the app gets all of it at once.
slow_small_body_is_served(_Config) ->
    {ok, Srv} = erlpy_http:start(#{app => <<"slow_apps:app">>, port => 0}),
    S = connect(erlpy_http:port(Srv)),
    ok = gen_tcp:send(S, <<"POST /sha256 HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\n\r\n">>),
    [begin ok = gen_tcp:send(S, binary:copy(<<"s">>, 1000)), timer:sleep(100) end || _ <- lists:seq(1, 4)],
    ?assertEqual({200, <<"4000 ", (sha_hex(binary:copy(<<"s">>, 4000)))/binary>>}, response(S)),
    gen_tcp:close(S),
    erlpy_http:stop(Srv).

%% A chunked body that ends within buffer_body is read first; a longer one
%% streams (the app starts once it passed buffer_body).  Both arrive whole.
chunked_small_and_big(_Config) ->
    {ok, Srv} = erlpy_http:start(#{app => <<"slow_apps:app">>, port => 0, buffer_body => 4096}),
    [begin
         Data = crypto:strong_rand_bytes(Size),
         S = connect(erlpy_http:port(Srv)),
         ok = gen_tcp:send(S, [<<"POST /sha256 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n">>,
                               [[integer_to_binary(byte_size(C), 16), "\r\n", C, "\r\n"] || C <- split(Data, 1000)],
                               "0\r\n\r\n"]),
         ?assertEqual({200, <<(integer_to_binary(Size))/binary, " ", (sha_hex(Data))/binary>>}, response(S)),
         gen_tcp:close(S)
     end || Size <- [0, 3000, 300000]],
    erlpy_http:stop(Srv).

%% A small chunked body over max_body: 413, and the app never ran.
chunked_small_too_large(_Config) ->
    {ok, Srv} = erlpy_http:start(#{app => <<"slow_apps:app">>, port => 0, max_body => 1000}),
    S = connect(erlpy_http:port(Srv)),
    ok = gen_tcp:send(S, [<<"POST /sha256 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n">>,
                          <<"400\r\n">>, binary:copy(<<"q">>, 1024), <<"\r\n0\r\n\r\n">>]),
    {ok, Resp} = recv_all(S),
    ?assertMatch(<<"HTTP/1.1 413", _/binary>>, Resp),
    ?assertEqual(0, count(<<"body">>)),
    erlpy_http:stop(Srv).

%% Expect: 100-continue with a small body: the 100 comes before the app
%% runs (the body is read first), even for an app that never reads it, and
%% the connection stays open.
expect_small_body_answered_at_once(_Config) ->
    {ok, Srv} = erlpy_http:start(#{app => <<"slow_apps:app">>, port => 0}),
    S = connect(erlpy_http:port(Srv)),
    ok = gen_tcp:send(S, <<"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                           "Expect: 100-continue\r\n\r\n">>),
    ?assertEqual({ok, <<"HTTP/1.1 100 Continue\r\n\r\n">>}, gen_tcp:recv(S, 25, 10000)),
    ok = gen_tcp:send(S, <<"hello">>),
    ?assertEqual({200, <<"Hello, World!">>}, response(S)),
    ok = gen_tcp:send(S, <<"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n">>),
    ?assertEqual({200, <<"Hello, World!">>}, response(S)),
    gen_tcp:close(S),
    erlpy_http:stop(Srv).

%% ------------------------------------------------------------------ steps

%% A sqlite3 connection made by the app and read while the response is
%% iterated (2 MB: several steps), eight at once with other requests
%% between their steps: sqlite3 raises if a step ran on another thread.
sqlite_while_iterating(_Config) ->
    {ok, Srv} = erlpy_http:start(#{app => <<"slow_apps:app">>, port => 0}),
    Port = erlpy_http:port(Srv),
    Self = self(),
    Keys = [integer_to_list(I) || I <- lists:seq(1, 8)],
    [spawn_link(fun() -> Self ! {K, get(Port, "/sqlite?rows=2000&key=sq" ++ K)} end) || K <- Keys],
    [receive
         {K, {Status, Body}} ->
             ?assertEqual(200, Status),
             Lines = binary:split(Body, <<"\n">>, [global, trim]),
             ?assertEqual(2000, length(Lines)),
             ?assertMatch([<<"1999 ", _/binary>>], lists:nthtail(1999, Lines))
     after 60000 -> ct:fail({no_answer, K})
     end || K <- Keys],
    erlpy_test:wait_until(fun() -> count(<<"closed">>) =:= 8 end),
    {ok, true} = py:eval(<<"all(__import__('slow_apps').same_thread('sq%d' % i) for i in range(1, 9))">>),
    erlpy_http:stop(Srv).

%% A body item reaches the client as soon as it is produced, not when the
%% window fills or the body ends.
streamed_as_produced(_Config) ->
    {ok, Srv} = erlpy_http:start(#{app => <<"slow_apps:app">>, port => 0}),
    S = connect(erlpy_http:port(Srv)),
    ok = gen_tcp:send(S, <<"GET /drip?key=drip HTTP/1.1\r\nHost: x\r\n\r\n">>),
    {ok, Head} = recv_until(S, <<"\r\n1\r\na\r\n">>, <<>>),
    ?assertMatch(<<"HTTP/1.1 200", _/binary>>, Head),
    {ok, true} = py:eval(<<"__import__('slow_apps').gate('drip').set() or True">>),
    {ok, _} = recv_until(S, <<"1\r\nb\r\n0\r\n\r\n">>, <<>>),
    gen_tcp:close(S),
    erlpy_http:stop(Srv).

%% The write() callable waits for deliveries: a client that lets its socket
%% fill before reading gets all of it (the server must not wait for the
%% job's end before delivering, as it does for an iterated body).
write_to_slow_reader(_Config) ->
    {ok, Srv} = erlpy_http:start(#{app => <<"slow_apps:app">>, port => 0}),
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, erlpy_http:port(Srv), [binary, {active, false}, {recbuf, 4096}]),
    ok = gen_tcp:send(S, <<"GET /write-big?n=64 HTTP/1.1\r\nHost: x\r\n\r\n">>),
    timer:sleep(500), %% the socket fills up
    ?assertEqual({200, binary:copy(<<"w">>, 64 * 65536)}, response(S)),
    gen_tcp:close(S),
    erlpy_http:stop(Srv).

%% The acknowledgement buffer of write(): made once for a connection's
%% requests that do not call write() (one py_buffer:new/1 for many GETs),
%% and a write() app after them, and after another write() app, is still
%% held back by a client that does not read (no stale acknowledgements).
write_window_after_keep_alive(_Config) ->
    {ok, Srv} = erlpy_http:start(#{app => <<"slow_apps:app">>, port => 0}),
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, erlpy_http:port(Srv), [binary, {active, false}, {recbuf, 4096}]),
    Hello = fun() ->
                    ok = gen_tcp:send(S, <<"GET /body?key=ka&n=1 HTTP/1.1\r\nHost: x\r\n\r\n">>),
                    ?assertEqual({200, binary:copy(<<"x">>, 65536)}, response(S))
            end,
    Hello(),
    erlang:trace_pattern({py_buffer, new, 1}, true, [call_count]),
    try
        [Hello() || _ <- lists:seq(1, 5)],
        ?assertEqual({call_count, 0}, erlang:trace_info({py_buffer, new, 1}, call_count))
    after
        erlang:trace_pattern({py_buffer, new, 1}, false, [call_count])
    end,
    %% 400 chunks of 64 KiB: far more than the socket buffers and the window.
    Held = fun(Key) ->
                   ok = gen_tcp:send(S, ["GET /write-big?n=400&key=", Key, " HTTP/1.1\r\nHost: x\r\n\r\n"]),
                   erlpy_test:wait_until(fun() -> count(<<"wrote">>, Key) > 0 end),
                   timer:sleep(500), %% the socket fills up
                   Wrote = count(<<"wrote">>, Key),
                   ct:pal("write() calls returned before the client read: ~b of 400", [Wrote]),
                   ?assert(Wrote < 200),
                   ?assertEqual({200, binary:copy(<<"w">>, 400 * 65536)}, response(S))
           end,
    Held(<<"w1">>),
    Hello(),
    Held(<<"w2">>),
    Hello(),
    gen_tcp:close(S),
    erlpy_http:stop(Srv).

%% 40 chunks of 64 KiB, read to the end: close() once, on the thread that
%% started the response.
close_once_normal_end(_Config) ->
    {ok, Srv} = erlpy_http:start(#{app => <<"slow_apps:app">>, port => 0}),
    ?assertEqual({200, binary:copy(<<"x">>, 40 * 65536)}, get(erlpy_http:port(Srv), "/body?key=n&n=40")),
    erlpy_test:wait_until(fun() -> count(<<"closed">>) =:= 1 end),
    {ok, true} = py:eval(<<"__import__('slow_apps').same_thread('n')">>),
    erlpy_http:stop(Srv).

%% The client leaves mid-response: close() once, on that thread.
close_once_client_gone(_Config) ->
    {ok, Srv} = erlpy_http:start(#{app => <<"slow_apps:app">>, port => 0}),
    S = connect(erlpy_http:port(Srv)),
    ok = gen_tcp:send(S, <<"GET /endless?key=g HTTP/1.1\r\nHost: x\r\n\r\n">>),
    {ok, _} = gen_tcp:recv(S, 100000, 10000),
    ok = gen_tcp:close(S),
    erlpy_test:wait_until(fun() -> count(<<"closed">>) =:= 1 end),
    %% The server goes on; nothing closes it a second time.
    ?assertEqual({200, <<"Hello, World!">>}, get(erlpy_http:port(Srv), "/hello")),
    {ok, true} = py:eval(<<"__import__('slow_apps').same_thread('g')">>),
    erlpy_http:stop(Srv).

%% The body raises after 20 chunks (past the first window): the response
%% is cut (no last chunk), close() once, on that thread.
close_once_app_exception(_Config) ->
    {ok, Srv} = erlpy_http:start(#{app => <<"slow_apps:app">>, port => 0}),
    S = connect(erlpy_http:port(Srv)),
    ok = gen_tcp:send(S, <<"GET /body?key=x&n=40&fail=20 HTTP/1.1\r\nHost: x\r\n\r\n">>),
    {ok, All} = recv_all(S),
    ?assertMatch(<<"HTTP/1.1 200", _/binary>>, All),
    ?assert(byte_size(All) > 20 * 65536),
    ?assertEqual(nomatch, binary:match(All, <<"\r\n0\r\n\r\n">>)),
    erlpy_test:wait_until(fun() -> count(<<"closed">>) =:= 1 end),
    {ok, true} = py:eval(<<"__import__('slow_apps').same_thread('x')">>),
    erlpy_http:stop(Srv).

%% The server stops while a client reads slowly: after the grace period
%% the connection process is killed, and the reaper has close() run once
%% on the response's thread.
close_once_server_stop(_Config) ->
    {ok, Srv} = erlpy_http:start(#{app => <<"slow_apps:app">>, port => 0}),
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, erlpy_http:port(Srv), [binary, {active, false}, {recbuf, 4096}]),
    ok = gen_tcp:send(S, <<"GET /endless?key=stop HTTP/1.1\r\nHost: x\r\n\r\n">>),
    erlpy_test:wait_until(fun() -> count(<<"started">>) =:= 1 end),
    ok = erlpy_http:stop(Srv, 500),
    erlpy_test:wait_until(fun() -> count(<<"closed">>) =:= 1 end, 10000),
    {ok, true} = py:eval(<<"__import__('slow_apps').same_thread('stop')">>),
    gen_tcp:close(S).

%% ------------------------------------------------------------------ cap

%% max_workers 2, max_waiting 1: two requests hold both workers, a third
%% waits at the gate (its app has not started), a fourth gets 503 with
%% Retry-After.  The node's other callers are served meanwhile.  When the
%% two finish, the third runs.
worker_cap_and_503(_Config) ->
    {ok, Srv} = erlpy_http:start(#{app => <<"slow_apps:app">>, port => 0, max_workers => 2,
                                    max_waiting => 1}),
    Port = erlpy_http:port(Srv),
    Self = self(),
    Ask = fun(Key) -> spawn_link(fun() -> Self ! {Key, get(Port, "/block?key=" ++ Key)} end) end,
    Ask("a"),
    Ask("b"),
    erlpy_test:wait_until(fun() -> count(<<"blocked">>) =:= 2 end),
    {ok, true} = py:eval(<<"__import__('slow_apps').gate('c').set() or True">>),
    Ask("c"),
    timer:sleep(300), %% let "c" reach the wait queue
    S = connect(Port),
    ok = gen_tcp:send(S, <<"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n">>),
    {ok, Resp} = recv_all(S),
    ?assertMatch(<<"HTTP/1.1 503", _/binary>>, Resp),
    ?assertNotEqual(nomatch, binary:match(Resp, <<"\r\nRetry-After: 1\r\n">>)),
    ?assertNotEqual(nomatch, binary:match(Resp, <<"\r\nDate: ">>)),
    ?assertEqual(0, count(<<"blocked">>, <<"c">>)),
    ?assertEqual({ok, 3}, py:call(any, operator, add, [1, 2], #{}, #{timeout => 10000})),
    {ok, true} = py:eval(<<"[__import__('slow_apps').gate(k).set() for k in 'ab'] and True">>),
    [receive {K, Answer} -> ?assertEqual({200, list_to_binary(K)}, Answer) after 10000 -> ct:fail({lost, K}) end
     || K <- ["a", "b", "c"]],
    ?assertEqual({200, <<"Hello, World!">>}, get(Port, "/hello")),
    erlpy_http:stop(Srv).

%% The gate alone (py:gate/2, py:submit/6): waiters served oldest first,
%% a next call (a later step of admitted work) before first ones, `busy'
%% past max_waiting for a first call (never for a next one), a waiting call
%% whose caller dies leaves the queue, and a holder whose caller dies is
%% cancelled and passes its place on.
py_gate(_Config) ->
    G = py:gate(1, 1),
    Hold = fun(Key, Admit) -> py:submit(any, slow_apps, hold, [Key], #{}, #{gate => G, admit => Admit}) end,
    Held = fun(Key) -> {ok, N} = py:call(slow_apps, count, [<<"held">>, Key]), N end,
    Release = fun(Key) -> {ok, true} = py:eval(<<"__import__('slow_apps').gate(k.decode()).set() or True">>,
                                               #{k => Key}) end,
    {ok, A} = Hold(<<"ga">>, first),
    erlpy_test:wait_until(fun() -> Held(<<"ga">>) =:= 1 end),
    {ok, B} = Hold(<<"gb">>, first),
    ?assertEqual({error, busy}, Hold(<<"gc">>, first)),
    {ok, D} = Hold(<<"gd">>, next), %% waits though the waiting room is full
    Self = self(),
    Doomed = spawn(fun() -> Self ! {self(), Hold(<<"ge">>, next)}, receive never -> ok end end),
    receive {Doomed, {ok, _}} -> ok after 5000 -> ct:fail(not_submitted) end,
    ?assertEqual(#{holding => 1, waiting => 3}, py:gate_info(G)),
    exit(Doomed, kill),
    erlpy_test:wait_until(fun() -> py:gate_info(G) =:= #{holding => 1, waiting => 2} end),
    Release(<<"ga">>),
    receive {A, {ok, <<"ga">>}} -> ok after 5000 -> ct:fail(a_not_done) end,
    %% D, a next call, goes before B, though B came first.
    erlpy_test:wait_until(fun() -> Held(<<"gd">>) =:= 1 end),
    ?assertEqual(0, Held(<<"gb">>)),
    Release(<<"gd">>),
    receive {D, {ok, <<"gd">>}} -> ok after 5000 -> ct:fail(d_not_done) end,
    erlpy_test:wait_until(fun() -> Held(<<"gb">>) =:= 1 end),
    Release(<<"gb">>),
    receive {B, {ok, <<"gb">>}} -> ok after 5000 -> ct:fail(b_not_done) end,
    ?assertEqual(0, Held(<<"ge">>)),
    %% A holder whose caller dies: cancelled, and the next waiter runs.
    Holder = spawn(fun() -> Self ! {self(), Hold(<<"gf">>, first)}, receive never -> ok end end),
    receive {Holder, {ok, _}} -> ok after 5000 -> ct:fail(not_submitted) end,
    erlpy_test:wait_until(fun() -> Held(<<"gf">>) =:= 1 end),
    {ok, F2} = Hold(<<"gg">>, first),
    exit(Holder, kill),
    erlpy_test:wait_until(fun() -> Held(<<"gg">>) =:= 1 end),
    Release(<<"gg">>),
    receive {F2, {ok, <<"gg">>}} -> ok after 5000 -> ct:fail(g_not_done) end,
    erlpy_test:wait_until(fun() -> py:gate_info(G) =:= #{holding => 0, waiting => 0} end),
    %% Gates are this node's; wrong arguments are badarg.
    ?assertError(badarg, py:submit(worker_nodes, slow_apps, hold, [<<"x">>], #{}, #{gate => G})),
    ?assertError(badarg, py:submit(any, slow_apps, hold, [<<"x">>], #{}, #{gate => G, admit => later})),
    ?assertError(badarg, py:submit(any, slow_apps, hold, [<<"x">>], #{}, #{gate => not_a_gate})),
    ?assertError(badarg, py:gate(0, 1)).

%% A gated call queued (holding a place) behind another job on its context;
%% its caller dies: the place goes to the oldest waiter.
gate_cancel_queued_holder(_Config) ->
    G = py:gate(2, 10),
    Hold = fun(Ctx, Key) -> py:submit(Ctx, slow_apps, hold, [Key], #{}, #{gate => G}) end,
    Held = fun(Key) -> {ok, N} = py:call(slow_apps, count, [<<"held">>, Key]), N end,
    Release = fun(Key) -> {ok, true} = py:eval(<<"__import__('slow_apps').gate(k.decode()).set() or True">>,
                                               #{k => Key}) end,
    {ok, Blocker} = py:submit(py:context(1), slow_apps, hold, [<<"qblk">>], #{}),
    erlpy_test:wait_until(fun() -> Held(<<"qblk">>) =:= 1 end),
    Self = self(),
    Queued = spawn(fun() -> Self ! {self(), Hold(py:context(1), <<"qq">>)}, receive never -> ok end end),
    receive {Queued, {ok, _}} -> ok after 5000 -> ct:fail(not_submitted) end,
    {ok, R} = Hold(any, <<"qr">>),
    erlpy_test:wait_until(fun() -> Held(<<"qr">>) =:= 1 end),
    {ok, W} = Hold(any, <<"qw">>),
    ?assertEqual(#{holding => 2, waiting => 1}, py:gate_info(G)),
    exit(Queued, kill),
    erlpy_test:wait_until(fun() -> Held(<<"qw">>) =:= 1 end),
    ?assertEqual(#{holding => 2, waiting => 0}, py:gate_info(G)),
    [Release(K) || K <- [<<"qblk">>, <<"qr">>, <<"qw">>]],
    [receive {Ref, {ok, _}} -> ok after 5000 -> ct:fail({no_reply, Ref}) end || Ref <- [Blocker, R, W]],
    ?assertEqual(0, Held(<<"qq">>)),
    erlpy_test:wait_until(fun() -> py:gate_info(G) =:= #{holding => 0, waiting => 0} end).

%% 300 gated calls on mixed contexts, first and next, a quarter of their
%% callers killed at random moments (waiting, queued, running): every other
%% call answers, and the gate's counts come back to zero.
gate_churn_with_kills(_Config) ->
    N = py:contexts(),
    G = py:gate(2, 1000),
    Self = self(),
    Jobs = [begin
                Ctx = case I rem 3 of 0 -> any; _ -> py:context(1 + I rem N) end,
                Admit = case I rem 2 of 0 -> first; 1 -> next end,
                P = spawn(fun() ->
                                  {ok, Ref} = py:submit(Ctx, time, sleep, [0.002], #{},
                                                        #{gate => G, admit => Admit}),
                                  Self ! {submitted, self()},
                                  receive {Ref, Reply} -> Self ! {done, self(), Reply} end
                          end),
                {P, I rem 4 =:= 0}
            end || I <- lists:seq(1, 300)],
    [receive {submitted, P} -> ok after 5000 -> ct:fail(not_submitted) end || {P, _} <- Jobs],
    [begin timer:sleep(rand:uniform(3) - 1), exit(P, kill) end || {P, true} <- Jobs],
    [receive {done, P, {ok, none}} -> ok after 35000 -> ct:fail({no_reply, P}) end || {P, false} <- Jobs],
    erlpy_test:wait_until(fun() -> py:gate_info(G) =:= #{holding => 0, waiting => 0} end).

%% ------------------------------------------------------------------ helpers

count(What) ->
    {ok, N} = py:call(slow_apps, count, [What]),
    N.

count(What, Key) ->
    {ok, N} = py:call(slow_apps, count, [What, Key]),
    N.

connect(Port) ->
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {active, false}]),
    S.

get(Port, Path) ->
    S = connect(Port),
    ok = gen_tcp:send(S, ["GET ", Path, " HTTP/1.1\r\nHost: x\r\n\r\n"]),
    Answer = response(S),
    gen_tcp:close(S),
    Answer.

%% One response: {Status, Body} (Content-Length or chunked).
response(S) ->
    ok = inet:setopts(S, [{packet, http_bin}]),
    {ok, {http_response, _, Status, _}} = gen_tcp:recv(S, 0, 30000),
    Headers = headers(S, []),
    ok = inet:setopts(S, [{packet, raw}]),
    Body = case lists:keyfind('Content-Length', 1, Headers) of
               {_, N} -> recv_n(S, binary_to_integer(N));
               false -> chunks(S, [])
           end,
    {Status, Body}.

headers(S, Acc) ->
    case gen_tcp:recv(S, 0, 30000) of
        {ok, {http_header, _, Name, _, Value}} -> headers(S, [{Name, Value} | Acc]);
        {ok, http_eoh} -> Acc
    end.

chunks(S, Acc) ->
    ok = inet:setopts(S, [{packet, line}]),
    {ok, Line} = gen_tcp:recv(S, 0, 30000),
    ok = inet:setopts(S, [{packet, raw}]),
    case binary_to_integer(string:trim(Line), 16) of
        0 -> <<"\r\n">> = recv_n(S, 2), iolist_to_binary(lists:reverse(Acc));
        N -> Data = recv_n(S, N), <<"\r\n">> = recv_n(S, 2), chunks(S, [Data | Acc])
    end.

recv_n(_S, 0) -> <<>>;
recv_n(S, N) -> {ok, D} = gen_tcp:recv(S, N, 30000), D.

recv_until(S, Tail, Acc) ->
    case binary:match(Acc, Tail) of
        nomatch ->
            case gen_tcp:recv(S, 0, 30000) of
                {ok, Data} -> recv_until(S, Tail, <<Acc/binary, Data/binary>>);
                Error -> {Error, Acc}
            end;
        _ ->
            {ok, Acc}
    end.

recv_all(S) ->
    recv_all(S, <<>>).

recv_all(S, Acc) ->
    case gen_tcp:recv(S, 0, 30000) of
        {ok, Data} -> recv_all(S, <<Acc/binary, Data/binary>>);
        {error, closed} -> {ok, Acc};
        {error, Reason} -> {error, Reason, Acc}
    end.

split(<<>>, _N) -> [];
split(Data, N) when byte_size(Data) =< N -> [Data];
split(Data, N) -> <<C:N/binary, Rest/binary>> = Data, [C | split(Rest, N)].

median(L) ->
    lists:nth((length(L) + 1) div 2, lists:sort(L)).

sha_hex(Data) ->
    string:lowercase(binary:encode_hex(crypto:hash(sha256, Data))).
