%% A job follows its caller, and interrupts never wait behind Python code:
%% a dead caller's job is dropped or interrupted (a buffer read wakes at
%% once), and a destructor that never returns costs only its own thread.
-module(py_cancel_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-compile([export_all, nowarn_export_all]).

all() ->
    [killed_buffer_readers_do_not_wedge_the_node, killed_caller_queued_job_never_runs,
     killed_caller_cpu_loop_frees_worker, killed_wsgi_caller_frees_worker,
     timeout_after_caller_death_is_harmless,
     stuck_del_does_not_stop_timeouts_or_freeing, stuck_reapers_are_capped_and_exit].

init_per_suite(Config) ->
    erlpy_test:start(Config).

end_per_suite(Config) ->
    erlpy_test:stop(Config).

init_per_testcase(_, Config) ->
    ok = py:exec(<<"import cancel_helpers; cancel_helpers.events.clear()">>),
    Config.

end_per_testcase(_, _Config) ->
    ok.

%% Regression (issue 8): killing 8 callers that were reading buffers left
%% all 8 contexts blocked for good, and every later py:call(any, ...) waited
%% for ever.  Two more callers are queued behind them, and killed too.
killed_buffer_readers_do_not_wedge_the_node(_) ->
    N = py:contexts(),
    ?assert(N >= 8),
    %% Every worker free first: a job left by an earlier suite would keep
    %% one of the N readers queued, and the test waited for ever (seen once).
    wait_until(fun() -> busy() =:= 0 andalso queued() =:= 0 end, 60000),
    Bufs = [begin {ok, B} = py_buffer:new(), B end || _ <- lists:seq(1, N + 2)],
    Self = self(),
    Callers = [{I, spawn(fun() -> py:call(cancel_helpers, read_all, [B, I, Self], #{}, #{timeout => infinity}) end)}
               || {I, B} <- lists:zip(lists:seq(1, N + 2), Bufs)],
    %% Every worker is reading (no worker is free to ask Python anything).
    Reading = [receive {reading, I} -> I after 60000 -> ct:fail({readers_not_started, py_nif:info()}) end
               || _ <- lists:seq(1, N)],
    wait_until(fun() -> queued() =:= 2 end),
    %% The queued two first (a freed worker would take them), then the readers.
    [exit(P, kill) || {I, P} <- Callers, not lists:member(I, Reading)],
    wait_until(fun() -> queued() =:= 0 end),
    [exit(P, kill) || {I, P} <- Callers, lists:member(I, Reading)],
    %% Every read is woken (nothing is ever written or closed), the queued
    %% two never start, and the node answers again.
    ?assertEqual({ok, 3}, py:call(any, operator, add, [1, 2], #{}, #{timeout => 30000})),
    wait_until(fun() -> busy() =:= 0 andalso queued() =:= 0 end, 30000),
    ?assertEqual(lists:sort(Reading), lists:sort(seen(reading))),
    ?assertEqual(lists:sort(Reading), lists:sort(seen(interrupted))),
    [?assertEqual(ok, py_buffer:close(B)) || B <- Bufs].

%% A queued job whose caller dies is dropped: it never runs.
killed_caller_queued_job_never_runs(_) ->
    Ctx = py:context(1),
    {ok, Gate} = py_buffer:new(),
    Self = self(),
    Holder = spawn_link(fun() -> Self ! {held, py:call(Ctx, cancel_helpers, read_all, [Gate, 0])} end),
    wait_until(fun() -> seen(reading) =:= [0] end),
    Victim = spawn(fun() -> py:call(Ctx, cancel_helpers, record, [1], #{}, #{timeout => infinity}) end),
    wait_until(fun() -> queued() =:= 1 end),
    exit(Victim, kill),
    %% Unlinked from the queue while context 1 is still blocked.
    wait_until(fun() -> queued() =:= 0 end),
    ok = py_buffer:close(Gate),
    receive {held, R} -> ?assertEqual({ok, 0}, R) end,
    unlink(Holder),
    %% Calls on a context run in order: had the job been queued, it ran by now.
    ?assertEqual({ok, 2}, py:call(Ctx, cancel_helpers, record, [2])),
    ?assertEqual([2], seen(ran)).

%% A running CPU-bound call whose caller dies gets CallTimeout raised, as
%% on a timeout, and its worker is free again.
killed_caller_cpu_loop_frees_worker(_) ->
    Ctx = py:context(2),
    Victim = spawn(fun() -> py:call(Ctx, cancel_helpers, spin, [7], #{}, #{timeout => infinity}) end),
    wait_until(fun() -> seen(spinning) =:= [7] end),
    exit(Victim, kill),
    ?assertEqual({ok, 2}, py:call(Ctx, operator, add, [1, 1], #{}, #{timeout => 30000})),
    ?assertEqual([7], seen(interrupted)).

%% py_wsgi:run submits from the calling (connection) process: its death
%% frees the worker of an app blocked reading the request body.
killed_wsgi_caller_frees_worker(_) ->
    {ok, Input} = py_buffer:new(),
    Env = #{<<"REQUEST_METHOD">> => <<"POST">>, <<"PATH_INFO">> => <<"/">>},
    Conn = spawn(fun() ->
                         py_wsgi:run(<<"cancel_helpers:wsgi_read_body">>, Env, Input,
                                     {fun(_Event, S) -> {ok, S} end, []},
                                     #{context => py:context(3)})
                 end),
    wait_until(fun() -> seen(reading) =:= [<<"wsgi">>] end),
    exit(Conn, kill),
    ?assertEqual({ok, 2}, py:call(py:context(3), operator, add, [1, 1], #{}, #{timeout => 30000})),
    ?assertEqual([<<"wsgi">>], seen(interrupted)),
    ok = py_buffer:close(Input).

%% The caller times out (cancel), then dies: the second cancel finds
%% nothing to do.  And a caller that dies after its reply came is harmless.
timeout_after_caller_death_is_harmless(_) ->
    Ctx = py:context(4),
    Self = self(),
    P = spawn(fun() ->
                      Self ! {r, py:call(Ctx, cancel_helpers, spin, [8], #{}, #{timeout => 50})},
                      Self ! {r, py:call(Ctx, operator, add, [1, 1])}
              end),
    receive {r, R1} -> ?assertEqual({error, timeout}, R1) end,
    receive {r, R2} -> ?assertEqual({ok, 2}, R2) end,
    wait_until(fun() -> not is_process_alive(P) end),
    ?assertEqual([8], seen(interrupted)),
    ?assertEqual({ok, 3}, py:call(Ctx, operator, add, [1, 2])).

%% Regression (issue 8): one dropped handle whose __del__ never returned
%% wedged the janitor: call timeouts stopped interrupting Python and later
%% dropped handles were never freed.
stuck_del_does_not_stop_timeouts_or_freeing(_) ->
    Threads0 = threads(),
    drop(fun() -> {ok, _} = py:call(cancel_helpers, make_stuck, []) end),
    wait_until(fun() -> length(seen(del_started)) =:= 1 end),
    try
        %% Timeouts still interrupt: the worker is freed.
        Ctx = py:context(5),
        ?assertEqual({error, timeout}, py:call(Ctx, cancel_helpers, spin, [9], #{}, #{timeout => 100})),
        ?assertEqual({ok, 2}, py:call(Ctx, operator, add, [1, 1], #{}, #{timeout => 30000})),
        ?assertEqual([9], seen(interrupted)),
        %% Handles dropped later are still freed (by a fresh reaper).
        drop(fun() -> [{ok, _} = py:call(cancel_helpers, make_tracked, [1 bsl 20]) || _ <- lists:seq(1, 40)] end),
        wait_until(fun() -> py:call(cancel_helpers, tracked_alive, []) =:= {ok, 0} end, 30000),
        ?assertEqual([], seen(del_returned))
    after
        {ok, true} = py:call(cancel_helpers, unstick, [])
    end,
    wait_until(fun() -> length(seen(del_returned)) =:= 1 end),
    %% The replaced reaper has exited.
    wait_until(fun() -> threads() =:= Threads0 end, 30000).

%% Each stuck destructor costs one thread, up to 8 of them; the ninth keeps
%% the queue (no more threads), and every stuck thread exits once its
%% __del__ returns.
stuck_reapers_are_capped_and_exit(_) ->
    Threads0 = threads(),
    drop(fun() -> [{ok, _} = py:call(cancel_helpers, make_stuck, []) || _ <- lists:seq(1, 10)] end),
    try
        wait_until(fun() -> length(seen(del_started)) =:= 9 end, 60000),
        ?assertEqual(Threads0 + 8, threads()),
        %% The tenth waits behind the ninth: no matter how long, no more threads.
        timer:sleep(3000),
        ?assertEqual(9, length(seen(del_started))),
        ?assertEqual(Threads0 + 8, threads())
    after
        {ok, true} = py:call(cancel_helpers, unstick, [])
    end,
    wait_until(fun() -> length(seen(del_returned)) =:= 10 end, 30000),
    wait_until(fun() -> threads() =:= Threads0 end, 30000).

%% ------------------------------------------------------------------ helpers

%% OS threads of this VM.
threads() ->
    {ok, Status} = file:read_file("/proc/self/status"),
    [_, Rest] = binary:split(Status, <<"Threads:">>),
    [N | _] = string:lexemes(Rest, " \t\n"),
    binary_to_integer(N).

%% Runs F in a process that then exits, so that the handles it made are
%% garbage and their Python objects are released.
drop(F) ->
    {Pid, Ref} = spawn_monitor(fun() -> F() end),
    receive {'DOWN', Ref, process, Pid, Reason} -> normal = Reason end.

busy() -> maps:get(busy, py_nif:info()).
queued() -> maps:get(queued, py_nif:info()).

%% The tags of the events of one kind (an atom is a str in Python).
seen(What) ->
    {ok, Tags} = py:call(cancel_helpers, seen, [What]),
    Tags.

wait_until(F) -> erlpy_test:wait_until(F).
wait_until(F, T) -> erlpy_test:wait_until(F, T).
