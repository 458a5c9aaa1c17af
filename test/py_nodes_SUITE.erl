%% Worker nodes (py_nodes): calls on other OS processes, buffers across
%% nodes, nodes that die, a node that joins.
-module(py_nodes_SUITE).
-include_lib("common_test/include/ct.hrl").
-compile([export_all, nowarn_export_all]).

all() ->
    [calls_land_on_different_os_processes,
     cpu_bound_work_runs_in_parallel,
     least_busy_node_takes_the_call,
     errors_options_and_conversions_cross,
     handles_work_on_their_node_only,
     a_dead_callers_job_is_cancelled_on_the_worker_node,
     call_server_death_fails_calls_in_flight_and_passes,
     submit_to_worker_nodes,
     a_dead_callers_relay_ends,
     same_buffer_twice_in_a_call,
     worker_node_prints_reach_this_node,
     erlang_send_reaches_this_node,
     buffer_streamed_to_a_worker_node_arrives_intact,
     a_waiting_relayed_buffer_holds_no_thread_here,
     writer_death_crosses_nodes,
     abort_crosses_nodes,
     reader_closed_on_worker_node_fails_writes,
     node_killed_mid_call_gives_node_down_and_comes_back,
     node_killed_mid_read_gives_clean_errors,
     segfault_in_a_worker_node_leaves_this_node_up,
     separately_started_node_joins_and_leaves,
     pool_end_cancels_its_calls,
     not_distributed_node_says_so].

init_per_suite(Config) ->
    ok = distribute(),
    _ = application:load(erlpy),
    ok = application:set_env(erlpy, worker_nodes, 2),
    Config1 = erlpy_test:start(Config),
    ok = wait_nodes(2),
    Config1.

end_per_suite(Config) ->
    erlpy_test:stop(Config),
    ok = application:set_env(erlpy, worker_nodes, 0),
    _ = net_kernel:stop(),
    ok.

%% rebar3 ct runs an undistributed node: distribution starts here
%% (short names; epmd started if it is not running).
distribute() ->
    case node() of
        nonode@nohost ->
            _ = os:cmd("epmd -daemon"),
            Name = list_to_atom("ct_nodes_" ++ os:getpid()),
            {ok, _} = net_kernel:start([Name, shortnames]),
            ok;
        _ ->
            ok
    end.

wait_nodes(N) ->
    erlpy_test:wait_until(fun() -> length(py_nodes:nodes()) =:= N andalso
                                       lists:all(fun answers/1, lists:seq(1, N)) end, 60000).

answers(I) ->
    py:eval(py:worker_node(I), <<"1">>, #{}, #{timeout => 10000}) =:= {ok, 1}.

ospid(Ctx) ->
    {ok, Pid} = py:eval(Ctx, <<"__import__('os').getpid()">>, #{}),
    Pid.

tmp(Name) ->
    filename:join("/tmp", Name ++ "_" ++ os:getpid() ++ "_" ++ integer_to_list(erlang:unique_integer([positive]))).

%% ------------------------------------------------------------------ calls

calls_land_on_different_os_processes(_) ->
    Local = ospid(any),
    W1 = ospid(py:worker_node(1)),
    W2 = ospid(py:worker_node(2)),
    3 = length(lists:usort([Local, W1, W2])),
    Local = list_to_integer(os:getpid()),
    %% Under scripts/test-asan the worker nodes run the sanitizer's emulator too.
    [true = binary:match(element(2, {ok, _} = erpc:call(N, file, read_file, ["/proc/self/maps"])),
                         <<"libasan">>) =/= nomatch
     || erlpy_test:sanitized(), {_, N} <- py_nodes:nodes()],
    %% `worker_nodes' lands on the worker nodes only.
    Seen = lists:usort([ospid(worker_nodes) || _ <- lists:seq(1, 20)]),
    [] = Seen -- [W1, W2],
    %% A context of a worker node: the same OS thread each time.
    {ok, T} = py:eval(py:worker_node(1, 2), <<"__import__('threading').get_ident()">>, #{}),
    {ok, T} = py:eval(py:worker_node(1, 2), <<"__import__('threading').get_ident()">>, #{}).

%% Node 1 holds its GIL (switch interval 1000 s, a pure-Python spin) until
%% node 2 sets a shared flag: it can only if it runs Python at the same time.
cpu_bound_work_runs_in_parallel(_) ->
    Flag = tmp("gil_flag"),
    {ok, none} = py:call(nodes_helpers, flag_file, [list_to_binary(Flag)]),
    Self = self(),
    spawn_link(fun() ->
                       Self ! {held, py:call(py:worker_node(1), nodes_helpers, hold_gil_until_flag,
                                             [list_to_binary(Flag)], #{})}
               end),
    erlpy_test:wait_until(fun() -> py:call(nodes_helpers, flag, [list_to_binary(Flag), 1]) =:= {ok, 1} end, 60000),
    {ok, Pid2} = py:call(py:worker_node(2), nodes_helpers, set_flag, [list_to_binary(Flag)], #{}),
    {ok, true} = receive {held, R} -> R end,
    true = Pid2 =/= ospid(py:worker_node(1)),
    ok = file:delete(Flag).

least_busy_node_takes_the_call(_) ->
    %% Node 1 is busy with a long call: `worker_nodes' picks node 2.
    Self = self(),
    W2 = ospid(py:worker_node(2)),
    Busy = spawn(fun() -> Self ! {busy, py:eval(py:worker_node(1), <<"__import__('time').sleep(2)">>, #{})} end),
    erlpy_test:wait_until(fun() -> busy(1) =:= 1 end),
    [W2 = ospid(worker_nodes) || _ <- lists:seq(1, 5)],
    receive {busy, {ok, none}} -> ok end,
    false = is_process_alive(Busy).

busy(I) ->
    [Busy] = [counters:get(C, 1) || {J, _, C, _} <- ets:tab2list(py_nodes), J =:= I],
    Busy.

errors_options_and_conversions_cross(_) ->
    W = py:worker_node(1),
    {error, {python, <<"ZeroDivisionError">>, <<"division by zero">>, Tb}} = py:eval(W, <<"1/0">>, #{}),
    true = is_binary(Tb),
    {error, timeout} = py:eval(W, <<"__import__('time').sleep(5)">>, #{}, #{timeout => 100}),
    %% The largest timeout there is (the caller's own wait is capped).
    {ok, 2} = py:eval(W, <<"1 + 1">>, #{}, #{timeout => 16#ffffffff}),
    {ok, <<"a/b">>} = py:call(W, 'os.path', join, [<<"a">>, <<"b">>], #{}),
    {ok, {ok, [1, 2.5, <<"x">>, #{<<"k">> := none}]}} =
        py:eval(W, <<"(__import__('erlang').Atom('ok'), [1, 2.5, 'x', {'k': None}])">>, #{}),
    {ok, [nan, inf]} = py:eval(W, <<"[float('nan'), float('inf')]">>, #{}),
    ok = py:exec(py:worker_node(1, 1), <<"kept = 42">>),
    {ok, 42} = py:eval(py:worker_node(1, 1), <<"kept">>, #{}),
    %% A pid crosses and comes back; Python can send to it.
    Self = self(),
    {ok, Self} = py:eval(W, <<"p">>, #{p => Self}),
    {error, no_worker_nodes} = py:eval(py:worker_node(9), <<"1">>, #{}),
    badarg = try py:worker_node(0) catch error:badarg -> badarg end,
    badarg = try py:call(W, m, f, not_a_list, #{}) catch error:badarg -> badarg end.

handles_work_on_their_node_only(_) ->
    {ok, Re} = py:call(py:worker_node(1), re, compile, [<<"a+">>], #{}),
    {ok, <<"aaa">>} = py:eval(py:worker_node(1), <<"p.match(b'aaab').group(0)">>, #{p => Re}),
    %% Still alive after a garbage collection here and there.
    erlang:garbage_collect(),
    {ok, <<"aa">>} = py:eval(py:worker_node(1), <<"p.match(b'aa').group(0)">>, #{p => Re}),
    Node1 = node(Re),
    {error, {foreign_handle, Node1}} = py:eval(py:worker_node(2), <<"p">>, #{p => [{x, Re}]}),
    %% Here too (checked at the top level of the arguments).
    {error, {foreign_handle, Node1}} = py:eval(<<"p">>, #{p => Re}),
    {error, {foreign_handle, Node1}} = py:call(operator, is_, [Re, Re]),
    %% A reference of this node is no handle of a worker node.
    Ref = make_ref(),
    {ok, Ref} = py:eval(<<"p">>, #{p => Ref}).

a_dead_callers_job_is_cancelled_on_the_worker_node(_) ->
    Key = erlang:unique_integer([positive]),
    Caller = spawn(fun() -> py:call(py:worker_node(2), nodes_helpers, sleep_noting, [60, Key], #{}) end),
    Finished = fun() -> {ok, How} = py:call(py:worker_node(2), nodes_helpers, finished, [Key], #{}), How end,
    erlpy_test:wait_until(fun() -> Finished() =:= [<<"started">>] end, 30000),
    exit(Caller, kill),
    erlpy_test:wait_until(fun() -> Finished() =:= [<<"started">>, <<"CallTimeout">>] end, 30000),
    %% Off the node's busy count, although the caller never came back.
    erlpy_test:wait_until(fun() -> busy(2) =:= 0 end, 10000).

%% A caller killed while its call reads a relayed buffer: the relay ends,
%% and the buffer's writer here is told {error, closed}, not held for ever.
a_dead_callers_relay_ends(_) ->
    {ok, B} = py_buffer:new(#{max_unread => 65536}),
    Self = self(),
    Caller = spawn(fun() -> py:eval(py:worker_node(1), <<"__import__('time').sleep(60)">>, #{b => B}) end),
    erlpy_test:wait_until(fun() -> busy(1) =:= 1 end),
    Writer = spawn(fun() -> Self ! {writer, write_until_error(B, binary:copy(<<"x">>, 65536))} end),
    %% The writer fills the relay's window and is held back meanwhile.
    timer:sleep(500),
    true = is_process_alive(Writer),
    exit(Caller, kill),
    {error, closed} = receive {writer, W} -> W after 30000 -> error(writer_held) end,
    erlpy_test:wait_until(fun() -> busy(1) =:= 0 end, 10000).

write_until_error(B, Piece) ->
    case py_buffer:write(B, Piece) of
        ok -> write_until_error(B, Piece);
        Error -> Error
    end.

%% One buffer twice in a call's arguments is relayed once: both names
%% read the same stream there.
same_buffer_twice_in_a_call(_) ->
    {ok, B} = py_buffer:new(),
    ok = py_buffer:write(B, <<"hello">>),
    ok = py_buffer:close(B),
    {ok, {5, 0}} = py:eval(py:worker_node(1), <<"(len(a.read()), len(b.read()))">>, #{a => B, b => B},
                           #{timeout => 10000}).

%% The worker node's call server dies mid-call (its supervisor starts it
%% again): the call in flight fails at once with worker_exit, its Python
%% job is cancelled, and the node serves again.
call_server_death_fails_calls_in_flight_and_passes(_) ->
    Key = erlang:unique_integer([positive]),
    [_, {2, Node}] = py_nodes:nodes(),
    Self = self(),
    spawn_link(fun() -> Self ! {slept, py:call(py:worker_node(2), nodes_helpers, sleep_noting, [60, Key], #{})} end),
    Finished = fun() -> {ok, How} = py:call(py:worker_node(2), nodes_helpers, finished, [Key], #{}), How end,
    erlpy_test:wait_until(fun() -> Finished() =:= [<<"started">>] end, 30000),
    Server = erpc:call(Node, erlang, whereis, [py_nodes_server]),
    true = erpc:call(Node, erlang, exit, [Server, kill]),
    {error, {worker_exit, killed}} = receive {slept, R} -> R after 10000 -> error(call_not_ended) end,
    erlpy_test:wait_until(fun() -> answers(2) andalso Finished() =:= [<<"started">>, <<"CallTimeout">>] end, 30000),
    true = erpc:call(Node, erlang, whereis, [py_nodes_server]) =/= Server.

%% py:submit/5 to a worker node: the result comes as {Ref, Result}; the
%% submitter's death cancels the call there.
submit_to_worker_nodes(_) ->
    W2 = ospid(py:worker_node(2)),
    {ok, R1} = py:submit(py:worker_node(2), os, getpid, [], #{}),
    {ok, W2} = receive {R1, Got1} -> Got1 after 30000 -> error(no_result) end,
    {ok, R2} = py:submit(worker_nodes, operator, mul, [6, 7], #{}),
    {ok, 42} = receive {R2, Got2} -> Got2 after 30000 -> error(no_result) end,
    {ok, R3} = py:submit(worker_nodes, builtins, int, [<<"x">>], #{}),
    {error, {python, <<"ValueError">>, _, _}} = receive {R3, Got3} -> Got3 after 30000 -> error(no_result) end,
    {error, no_worker_nodes} = py:submit(py:worker_node(9), os, getpid, [], #{}),
    %% A handle in a submitted call's result lives as long as the
    %% submitter, not the process that waited for it.
    {ok, R4} = py:submit(py:worker_node(1), re, compile, [<<"b+">>], #{}),
    {ok, Re} = receive {R4, Got4} -> Got4 after 30000 -> error(no_result) end,
    timer:sleep(300),
    {ok, <<"bbb">>} = py:eval(py:worker_node(1), <<"p.search(b'abbbc').group(0)">>, #{p => Re}),
    Key = erlang:unique_integer([positive]),
    Submitter = spawn(fun() ->
                              {ok, _} = py:submit(py:worker_node(2), nodes_helpers, sleep_noting, [60, Key], #{}),
                              receive after infinity -> ok end
                      end),
    Finished = fun() -> {ok, How} = py:call(py:worker_node(2), nodes_helpers, finished, [Key], #{}), How end,
    erlpy_test:wait_until(fun() -> Finished() =:= [<<"started">>] end, 30000),
    exit(Submitter, kill),
    erlpy_test:wait_until(fun() -> Finished() =:= [<<"started">>, <<"CallTimeout">>] end, 30000).

%% Python on a worker node sends to a pid of this node (an erlang.Term
%% there), from a worker and from a thread of its own; a Term that is no
%% pid is refused.
erlang_send_reaches_this_node(_) ->
    W = py:worker_node(2),
    {ok, none} = py:eval(W, <<"__import__('erlang').send(me, ('hello', 1))">>, #{me => self()}),
    {<<"hello">>, 1} = receive M1 -> M1 after 10000 -> error(no_message) end,
    {ok, none} = py:eval(W, <<"__import__('threading').Thread(target=__import__('erlang').send, args=(me, 'from a thread')).start()">>,
                         #{me => self()}),
    <<"from a thread">> = receive M2 -> M2 after 10000 -> error(no_message) end,
    {error, {python, <<"TypeError">>, _, _}} = py:eval(W, <<"__import__('erlang').send(r, 1)">>, #{r => make_ref()}).

%% print() on a worker node ends up written to that node's `user', which
%% OTP's peer relays to this node's standard output.  Here `user' there is
%% swapped for a process that reports what it is asked to write.
worker_node_prints_reach_this_node(_) ->
    [{1, Node} | _] = py_nodes:nodes(),
    Real = erpc:call(Node, erlang, whereis, [user]),
    Capture = erpc:call(Node, erlang, spawn, [?MODULE, capture_user, [self()]]),
    true = erpc:call(Node, erlang, unregister, [user]),
    try
        true = erpc:call(Node, erlang, register, [user, Capture]),
        {ok, none} = py:eval(py:worker_node(1), <<"print('printed on a worker node')">>, #{}),
        ok = py:exec(py:worker_node(1), <<"import sys; sys.stderr.write('and to stderr\\n')">>),
        ok = py:exec(py:worker_node(1), <<"import sys; sys.stdout.buffer.write(b'and bytes\\n')">>),
        Printed = printed(<<>>, 3),
        {match, _} = re:run(Printed, <<"printed on a worker node\n">>),
        {match, _} = re:run(Printed, <<"and to stderr\n">>),
        {match, _} = re:run(Printed, <<"and bytes\n">>)
    after
        _ = erpc:call(Node, erlang, unregister, [user]),
        true = erpc:call(Node, erlang, register, [user, Real]),
        exit(Capture, kill)
    end.

printed(Acc, 0) -> Acc;
printed(Acc, N) ->
    receive {printed, Text} -> printed(<<Acc/binary, Text/binary>>, N - 1)
    after 10000 -> error({not_printed, Acc})
    end.

%% A stand-in for `user' on a worker node (an I/O server that takes
%% put_chars requests and reports them to Test).
-spec capture_user(pid()) -> no_return().
capture_user(Test) ->
    receive
        {io_request, From, ReplyAs, {put_chars, unicode, Chars}} ->
            Test ! {printed, unicode:characters_to_binary(Chars)},
            From ! {io_reply, ReplyAs, ok};
        {io_request, From, ReplyAs, _} ->
            From ! {io_reply, ReplyAs, {error, enotsup}}
    end,
    capture_user(Test).

%% ------------------------------------------------------------------ buffers

buffer_streamed_to_a_worker_node_arrives_intact(_) ->
    Size = 64 * 1024 * 1024,
    {ok, B} = py_buffer:new(#{keep_consumed => false, max_unread => 1048576}),
    Self = self(),
    spawn_link(fun() -> Self ! {read, py:call(py:worker_node(1), nodes_helpers, sha256_of, [B], #{})} end),
    Piece = crypto:strong_rand_bytes(1048576),
    {Hash, MaxHeld} = write_pieces(B, Piece, Size div byte_size(Piece), crypto:hash_init(sha256), 0),
    ok = py_buffer:close(B),
    {ok, {Hex, Size, PeakRss}} = receive {read, R} -> R end,
    Hex = string:lowercase(binary:encode_hex(Hash)),
    ct:pal("held here at most ~b bytes; RSS growth there ~b bytes", [MaxHeld, PeakRss]),
    true = MaxHeld =< 4 * 1048576,
    true = erlpy_test:sanitized() orelse PeakRss < 32 * 1048576.

write_pieces(_B, _Piece, 0, Ctx, Max) ->
    {crypto:hash_final(Ctx), Max};
write_pieces(B, Piece, N, Ctx, Max) ->
    ok = py_buffer:write(B, Piece),
    #{memory := Held} = py_buffer:info(B),
    write_pieces(B, Piece, N - 1, crypto:hash_update(Ctx, Piece), max(Max, Held)).

writer_death_crosses_nodes(_) ->
    Self = self(),
    Writer = spawn(fun() ->
                           {ok, B} = py_buffer:new(),
                           ok = py_buffer:write(B, <<"half a bo">>),
                           Self ! {buf, B},
                           receive never -> ok end
                   end),
    B = receive {buf, Buf} -> Buf end,
    spawn_link(fun() -> Self ! {read, py:eval(py:worker_node(2), <<"b.read()">>, #{b => B})} end),
    erlpy_test:wait_until(fun() -> busy(2) =:= 1 end),
    exit(Writer, kill),
    {error, {python, <<"erlang.StreamAborted">>, Msg, _}} = receive {read, R} -> R end,
    {match, _} = re:run(Msg, <<"exited without closing">>).

abort_crosses_nodes(_) ->
    {ok, B} = py_buffer:new(),
    ok = py_buffer:write(B, <<"some">>),
    Self = self(),
    spawn_link(fun() -> Self ! {read, py:eval(py:worker_node(1), <<"b.read()">>, #{b => B})} end),
    erlpy_test:wait_until(fun() -> busy(1) =:= 1 end),
    ok = py_buffer:abort(B, upstream_reset),
    {error, {python, <<"erlang.StreamAborted">>, Msg, _}} = receive {read, R} -> R end,
    {match, _} = re:run(Msg, <<"upstream_reset">>).

reader_closed_on_worker_node_fails_writes(_) ->
    {ok, B} = py_buffer:new(),
    {ok, Done} = py_buffer:new(),
    Self = self(),
    spawn_link(fun() ->
                       Self ! {call, py:call(py:worker_node(1), nodes_helpers, close_and_wait,
                                             [B, Done], #{})}
               end),
    ok = py_buffer:write(B, <<"x">>),
    %% While the call still runs (it waits for Done), writes fail once the
    %% close has crossed.
    erlpy_test:wait_until(fun() -> py_buffer:write(B, <<"more">>) =:= {error, closed} end, 10000),
    ok = py_buffer:close(Done),
    {ok, <<>>} = receive {call, R} -> R end.

%% ------------------------------------------------------------------ dying nodes

node_killed_mid_call_gives_node_down_and_comes_back(_) ->
    Self = self(),
    [{1, Node} | _] = py_nodes:nodes(),
    Old = ospid(py:worker_node(1)),
    Callers = [spawn_link(fun() -> Self ! {done, py:eval(py:worker_node(1), <<"__import__('time').sleep(60)">>, #{})} end)
               || _ <- lists:seq(1, 3)],
    erlpy_test:wait_until(fun() -> busy(1) =:= 3 end),
    %% A node's death is expected: no process of this node logs a crash.
    ok = logger:add_handler(nodes_crash_probe, ?MODULE, #{config => self()}),
    try
        _ = os:cmd("kill -9 " ++ integer_to_list(Old)),
        [{error, {node_down, Node}} = receive {done, R} -> R end || _ <- Callers],
        %% Node 2 kept serving; node 1 is started again.
        {ok, 2} = py:eval(py:worker_node(2), <<"1 + 1">>, #{}),
        ok = wait_nodes(2),
        true = ospid(py:worker_node(1)) =/= Old
    after
        logger:remove_handler(nodes_crash_probe)
    end,
    receive {crash_report, Crash} -> error({crash_logged, Crash}) after 0 -> ok end.

%% The logger handler of the test above.
log(#{msg := {report, #{label := {proc_lib, crash}} = Report}}, #{config := Test}) ->
    Test ! {crash_report, Report};
log(_Event, _Config) ->
    ok.

node_killed_mid_read_gives_clean_errors(_) ->
    {ok, B} = py_buffer:new(#{max_unread => 65536}),
    Self = self(),
    [{_, Node2}] = [NI || {2, _} = NI <- py_nodes:nodes()],
    Old = ospid(py:worker_node(2)),
    spawn_link(fun() -> Self ! {read, py:call(py:worker_node(2), nodes_helpers, sha256_of, [B], #{})} end),
    ok = py_buffer:write(B, <<"first">>),
    erlpy_test:wait_until(fun() -> busy(2) =:= 1 end),
    _ = os:cmd("kill -9 " ++ integer_to_list(Old)),
    {error, {node_down, Node2}} = receive {read, R} -> R end,
    %% The writer is told: nobody reads any more.
    erlpy_test:wait_until(fun() -> py_buffer:write(B, <<"more">>) =:= {error, closed} end, 10000),
    ok = wait_nodes(2).

%% The relay reads the buffer here from Erlang: while the worker node
%% waits for bytes, no Python thread of this node is busy.
a_waiting_relayed_buffer_holds_no_thread_here(_) ->
    {ok, B} = py_buffer:new(),
    Self = self(),
    spawn_link(fun() -> Self ! {read, py:call(py:worker_node(1), nodes_helpers, sha256_of, [B], #{})} end),
    erlpy_test:wait_until(fun() -> busy(1) =:= 1 end),
    timer:sleep(200),
    0 = maps:get(busy, py_nif:info()),
    ok = py_buffer:write(B, <<"late bytes">>),
    ok = py_buffer:close(B),
    Hex = string:lowercase(binary:encode_hex(crypto:hash(sha256, <<"late bytes">>))),
    {ok, {Hex, 10, _}} = receive {read, R} -> R after 10000 -> error(no_digest) end.

segfault_in_a_worker_node_leaves_this_node_up(_) ->
    [{1, Node} | _] = py_nodes:nodes(),
    {error, {node_down, Node}} = py:eval(py:worker_node(1), <<"__import__('ctypes').string_at(0)">>, #{}),
    {ok, 3} = py:eval(<<"1 + 2">>),
    ok = wait_nodes(2).

%% ------------------------------------------------------------------ membership

%% A pool that ends (here one of our own, over a node started apart, which
%% lives on) cancels the calls it carried there: nobody waits for them.
pool_end_cancels_its_calls(_) ->
    {ok, Peer, Node} = start_peer("_pool"),
    try
        {ok, Pool} = py_nodes:start_link(#{name => ct_own_pool, count => 0}),
        unlink(Pool),
        {ok, 1} = py_nodes:add(ct_own_pool, Node),
        Key = erlang:unique_integer([positive]),
        spawn(fun() -> py_nodes:call({ct_own_pool, 1, 0}, {call, <<"nodes_helpers">>, <<"sleep_noting">>, [60, Key], #{}},
                                     infinity, #{}) end),
        Finished = fun() ->
                           {ok, How} = erpc:call(Node, py, call, [nodes_helpers, finished, [Key]]),
                           How
                   end,
        erlpy_test:wait_until(fun() -> Finished() =:= [<<"started">>] end, 30000),
        exit(Pool, shutdown),
        erlpy_test:wait_until(fun() -> Finished() =:= [<<"started">>, <<"CallTimeout">>] end, 30000)
    after
        peer:stop(Peer)
    end.

separately_started_node_joins_and_leaves(_) ->
    {ok, Peer, Node} = start_peer("_extra"),
    try
        {ok, 3} = py_nodes:add(Node),
        {ok, 3} = py_nodes:add(Node),
        {ok, Pid} = py:eval(py:worker_node(3), <<"__import__('os').getpid()">>, #{}),
        true = integer_to_list(Pid) =:= erpc:call(Node, os, getpid, []),
        {ok, 7} = py:eval(py:worker_node(3), <<"3 + 4">>, #{}),
        %% A call in flight when the node leaves the pool finishes.
        Self = self(),
        spawn_link(fun() -> Self ! {late, py:eval(py:worker_node(3), <<"__import__('time').sleep(0.5) or 8">>, #{})} end),
        erlpy_test:wait_until(fun() -> busy(3) =:= 1 end, 10000),
        ok = py_nodes:remove(Node),
        {ok, 8} = receive {late, L} -> L after 10000 -> error(late_call_lost) end,
        {error, not_found} = py_nodes:remove(Node),
        {error, no_worker_nodes} = py:eval(py:worker_node(3), <<"1">>, #{}),
        %% Removed, not stopped.
        pong = net_adm:ping(Node),
        {error, nodedown} = py_nodes:add('nobody_here@nohost')
    after
        peer:stop(Peer)
    end.

%% A node that is not distributed cannot have worker nodes: the
%% application's start fails, naming the reason.
not_distributed_node_says_so(_) ->
    Paths = lists:append([["-pa", P] || P <- code:get_path(), not lists:prefix(code:lib_dir(), P)]),
    Erl = filename:join(os:getenv("BINDIR"), "erlexec"),
    Eval = "application:load(erlpy), application:set_env(erlpy, worker_nodes, 1), "
           "io:format(\"~p~n\", [application:start(erlpy)]), halt().",
    Port = open_port({spawn_executable, Erl},
                     [{args, ["-noshell" | Paths] ++ ["-eval", Eval]}, exit_status, stderr_to_stdout, binary]),
    Out = collect(Port, <<>>),
    ct:pal("~s", [Out]),
    {match, _} = re:run(Out, <<"not_distributed">>),
    {match, _} = re:run(Out, <<"needs a distributed node">>).

collect(Port, Acc) ->
    receive
        {Port, {data, D}} -> collect(Port, <<Acc/binary, D/binary>>);
        {Port, {exit_status, _}} -> Acc
    after 60000 -> error({no_exit, Acc})
    end.

%% A node started apart from any pool, with this node's code path.
start_peer(Suffix) ->
    Paths = [P || P <- code:get_path(), not lists:prefix(code:lib_dir(), P)],
    peer:start(#{name => "ct_nodes_" ++ os:getpid() ++ Suffix,
                 exec => {filename:join(os:getenv("BINDIR"), "erlexec"), []},
                 args => ["-setcookie", atom_to_list(erlang:get_cookie()), "-pa" | Paths]}).
