%% @doc Worker nodes against one GIL and against Python processes behind
%% ports (make bench-nodes; docs/performance.md, "Worker nodes").
%%
%% 1. CPU-bound: a pure-Python function of about 2 ms (bench/nodes_bench.py
%%    burn/1, calibrated at start) called by 8 Erlang processes for
%%    BENCH_SECONDS (default 5) each way: local contexts (one interpreter,
%%    one GIL), `worker_nodes' (2 worker nodes), and two Python processes
%%    behind ports (bench/port_burn.py, 4-byte requests: the cheapest
%%    possible transport), run by /usr/bin/python3 and again by
%%    bench/shared_python.c (the shared libpython erlpy embeds).  Calls/s,
%%    the ratios, and CPU ms per call (all the OS processes involved, from
%%    /proc); then how fast each interpreter runs burn/1 on its own.
%% 2. A 256 MiB stream (BENCH_STREAM_MB) written into a py_buffer and read
%%    to its end by Python, locally and on a worker node: MB/s, the peak RSS
%%    of this node and of the worker node meanwhile.
%% 3. Memory: the RSS of a worker node idle and after importing the
%%    benchmark app.
-module(bench_nodes).
-export([main/0]).

-define(PROCS, 8).

main() ->
    bench_lib:main("bench_nodes", fun run/0).

run() ->
    node() =/= nonode@nohost orelse error(run_me_with_sname),
    Bench = filename:dirname(code:which(?MODULE)) ++ "/..",
    _ = application:load(erlpy),
    ok = application:set_env(erlpy, python_path, [filename:absname(Bench)]),
    ok = application:set_env(erlpy, worker_nodes, 2),
    %% BENCH_CONTEXTS Python threads here and on each worker node (default 8).
    ok = application:set_env(erlpy, contexts, list_to_integer(os:getenv("BENCH_CONTEXTS", "8"))),
    {ok, _} = application:ensure_all_started(erlpy),
    Seconds = list_to_integer(os:getenv("BENCH_SECONDS", "5")),
    Workers = [list_to_integer(P) || {_, P} <- py_nodes:os_pids(py_nodes)],
    %% The fastest of 5 calibrations: a busy moment makes one too short.
    N = lists:max([element(2, py:call(nodes_bench, calibrate, [2])) || _ <- lists:seq(1, 5)]),
    io:format("bench_nodes: ~b CPUs, load ~s; burn(~b) is about 2 ms; ~b callers, "
              "~b rounds of 1 s each way, taken in turn~n",
              [erlang:system_info(logical_processors_available), loadavg(), N, ?PROCS, Seconds]),
    Me = list_to_integer(os:getpid()),
    Static = os:getenv("PYTHON", "/usr/bin/python3"),
    Shared = filename:join(filename:dirname(code:which(?MODULE)), "shared_python"),
    Ports = [{"2 Python processes (ports)", Static} |
             [{"  the same, shared libpython", Shared} || filelib:is_regular(Shared)]],
    Modes = [{"local contexts (one GIL)", fun() -> {ok, _} = py:call(nodes_bench, burn, [N]) end, [Me]},
             {"2 worker nodes", fun() -> {ok, _} = py:call(worker_nodes, nodes_bench, burn, [N]) end,
              [Me | Workers]}
             | [ports(Label, Python, Bench, N, Me) || {Label, Python} <- Ports]],
    %% Round by round, so that the shared machine's load changes fall on
    %% every way alike; the ratios are of the totals, and their spread over
    %% the rounds is shown beside them.
    Rounds = [[measure(Call, Pids) || {_, Call, Pids} <- Modes] || _ <- lists:seq(1, Seconds)],
    [{_, _, _, Local}, {_, _, _, Nodes} | _] = Totals =
        [{Label, Pids, Sums, total(Sums)} || {{Label, _, Pids}, Sums} <- lists:zip(Modes, transpose(Rounds))],
    Portsr = element(4, lists:nth(3, Totals)),
    [row(Label, Total, Local, Portsr) || {Label, _, _, Total} <- Totals],
    [split(Label, Sums) || {Label, _, Sums, _} <- Totals],
    Spread = fun(I, J) ->
                     Rs = lists:sort([rate(lists:nth(I, R)) / rate(lists:nth(J, R)) || R <- Rounds]),
                     io_lib:format("~.2f-~.2f", [hd(Rs), lists:last(Rs)])
             end,
    io:format("  per round: worker nodes ~sx one GIL, ~sx ports~s~n",
              [Spread(2, 1), Spread(2, 3),
               [io_lib:format(", ~sx ports running the shared libpython", [Spread(2, 4)]) || length(Modes) > 3]]),
    length(Modes) > 3 andalso
        io:format("  2 worker nodes against ports running the shared libpython: ~.2fx~n",
                  [element(1, Nodes) / element(1, element(4, lists:nth(4, Totals)))]),
    interpreters(N, Bench, [Python || {_, Python} <- Ports]),
    stream(),
    memory(Workers),
    ok = application:stop(erlpy).

transpose([[] | _]) -> [];
transpose(Rows) -> [[hd(R) || R <- Rows] | transpose([tl(R) || R <- Rows])].

%% One round (1 s) of ?PROCS processes calling Call: {Calls, Elapsed ms,
%% the CPU ms each of Pids spent meanwhile, by thread kind}.
measure(Call, Pids) ->
    Cpu0 = [threads(P) || P <- Pids],
    T0 = erlang:monotonic_time(millisecond),
    Deadline = T0 + 1000,
    Self = self(),
    [spawn_link(fun() -> Self ! {done, loop(Call, Deadline, 0)} end) || _ <- lists:seq(1, ?PROCS)],
    Calls = lists:sum([receive {done, C} -> C end || _ <- lists:seq(1, ?PROCS)]),
    Elapsed = erlang:monotonic_time(millisecond) - T0,
    {Calls, Elapsed, [maps:map(fun(K, V) -> V - maps:get(K, C0, 0) end, threads(P))
                      || {P, C0} <- lists:zip(Pids, Cpu0)]}.

rate({Calls, Elapsed, _}) -> Calls * 1000 / Elapsed.

%% {Calls per second, CPU ms per call} over the rounds.
total(Sums) ->
    Calls = lists:sum([C || {C, _, _} <- Sums]),
    Cpu = lists:sum([V || {_, _, Ms} <- Sums, M <- Ms, V <- maps:values(M)]),
    {Calls * 1000 / lists:sum([E || {_, E, _} <- Sums]), Cpu / Calls}.

%% The CPU per call by thread kind, this node's (the first pid) apart from
%% the other processes'.
split(Label, Sums) ->
    Calls = lists:sum([C || {C, _, _} <- Sums]),
    Merge = fun(Ms) -> lists:foldl(fun(M, A) -> maps:merge_with(fun(_, X, Y) -> X + Y end, M, A) end, #{}, Ms) end,
    Show = fun(M) -> lists:join(", ", [io_lib:format("~s ~.2f", [K, V / Calls]) || {K, V} <- lists:sort(maps:to_list(M))]) end,
    Here = Merge([hd(Ms) || {_, _, Ms} <- Sums]),
    Others = Merge([M || {_, _, [_ | Ms]} <- Sums, M <- Ms]),
    io:format("    ~s, CPU ms/call by thread: this node ~s; the others ~s~n",
              [string:trim(Label), Show(Here), Show(Others)]).

loop(Call, Deadline, N) ->
    case erlang:monotonic_time(millisecond) < Deadline of
        true -> Call(), loop(Call, Deadline, N + 1);
        false -> N
    end.

row(Label, {Rate, Cpu}, {Local, _}, {Ports, _}) ->
    io:format("  ~-30s ~8.1f calls/s  ~5.2fx one GIL  ~5.2fx ports  ~6.2f CPU ms/call~n",
              [Label, Rate, Rate / Local, Rate / Ports, Cpu]).

%% Two Python processes (Python, the interpreter's path) behind ports, each
%% owned by a process that runs one request at a time; the least busy port
%% takes each call, as worker_nodes picks the least busy node.  A mode:
%% {Label, the call, the OS pids to count}.
ports(Label, Python, Bench, N, Me) ->
    Script = filename:join(Bench, "port_burn.py"),
    Self = self(),
    Owners = [spawn_link(fun() ->
                                 Port = open_port({spawn_executable, Python},
                                                  [{args, [Script]}, {packet, 4}, binary]),
                                 {os_pid, OsPid} = erlang:port_info(Port, os_pid),
                                 Self ! {os_pid, self(), OsPid},
                                 port_loop(Port)
                         end) || _ <- [1, 2]],
    OsPids = [receive {os_pid, O, P} -> P end || O <- Owners],
    Busy = atomics:new(2, []),
    Call = fun() ->
                   I = case atomics:get(Busy, 1) =< atomics:get(Busy, 2) of true -> 1; false -> 2 end,
                   atomics:add(Busy, I, 1),
                   P = lists:nth(I, Owners),
                   P ! {call, self(), N},
                   receive {P, _} -> atomics:sub(Busy, I, 1) end
           end,
    {Label, Call, [Me | OsPids]}.

port_loop(Port) ->
    receive
        {call, From, N} ->
            true = port_command(Port, <<N:32>>),
            receive {Port, {data, R}} -> From ! {self(), R} end,
            port_loop(Port)
    end.

%% How fast each interpreter runs burn/1: the n that takes 2 ms of thread
%% CPU in each (the best of 5 calibrations), against the embedded one's;
%% and the CPU time of mixed/1 in each.  The ratios are what the
%% interpreter's build alone is worth, before any transport.
interpreters(N, Bench, Pythons) ->
    io:format("  burn/1 iterations per 2 ms of CPU: embedded (erlpy) ~b", [N]),
    [begin
         Iter = binary_to_integer(nodes_bench(P, Bench, "max(nodes_bench.calibrate(2) for _ in range(5))")),
         io:format(", ~s ~b (~.2fx)", [filename:basename(P), Iter, Iter / N])
     end || P <- Pythons],
    io:format("~n"),
    %% And another kind of pure Python: CPU time of mixed(300000).
    {ok, Here} = py:call(nodes_bench, best_cpu, [<<"mixed">>, 300000]),
    io:format("  mixed(300000), CPU ms: embedded (erlpy) ~.1f", [Here * 1000]),
    [begin
         There = binary_to_float(nodes_bench(P, Bench, "nodes_bench.best_cpu('mixed', 300000)")),
         io:format(", ~s ~.1f (embedded takes ~.2fx)", [filename:basename(P), There * 1000, Here / There])
     end || P <- Pythons],
    io:format("~n").

%% What Python (an interpreter's path) prints for Expr, with
%% bench/nodes_bench.py imported.
nodes_bench(Python, Bench, Expr) ->
    Code = "import sys; sys.path.insert(0, sys.argv[1]); import nodes_bench; print(" ++ Expr ++ ")",
    Port = open_port({spawn_executable, Python}, [{args, ["-c", Code, Bench]}, exit_status, binary]),
    string:trim(collect(Port, <<>>)).

collect(Port, Acc) ->
    receive
        {Port, {data, D}} -> collect(Port, <<Acc/binary, D/binary>>);
        {Port, {exit_status, 0}} -> Acc
    end.

%% CPU ms of OS process P so far, by thread kind: BEAM schedulers (normal
%% and dirty), erlpy's Python workers, the rest.
threads(P) ->
    Dir = "/proc/" ++ integer_to_list(P) ++ "/task/",
    {ok, Tasks} = file:list_dir(Dir),
    lists:foldl(fun(T, Acc) ->
                        case {file:read_file(Dir ++ T ++ "/comm"), file:read_file(Dir ++ T ++ "/stat")} of
                            {{ok, Comm}, {ok, Stat}} ->
                                maps:update_with(kind(Comm), fun(V) -> V + ticks(Stat) end, ticks(Stat), Acc);
                            _ -> Acc  % the thread ended meanwhile
                        end
                end, #{}, Tasks).

kind(Comm) ->
    case binary:match(Comm, [<<"sch">>, <<"erlpy-w">>]) of
        {_, 3} -> schedulers;
        {_, 7} -> python;
        nomatch -> other
    end.

ticks(Stat) ->
    [_, After] = binary:split(Stat, <<")">>),
    Fields = string:lexemes(binary_to_list(After), " "),
    (list_to_integer(lists:nth(12, Fields)) + list_to_integer(lists:nth(13, Fields))) * 10.

stream() ->
    MB = list_to_integer(os:getenv("BENCH_STREAM_MB", "256")),
    Piece = crypto:strong_rand_bytes(1048576),
    Ctx = py:worker_node(1),
    [{LocalRate, LocalPeak, _}, {RemoteRate, RemotePeak, WorkerPeak}] =
        [stream(Target, Piece, MB) || Target <- [any, Ctx]],
    io:format("  stream of ~b MiB (keep_consumed false, max_unread 1 MiB, 1 MiB writes):~n"
              "    read here:          ~7.1f MB/s, this node's RSS peak +~.1f MB~n"
              "    read on a worker:   ~7.1f MB/s (~.2fx), this node's RSS peak +~.1f MB, "
              "the worker's +~.1f MB~n",
              [MB, LocalRate, LocalPeak, RemoteRate, RemoteRate / LocalRate, RemotePeak, WorkerPeak]).

stream(Target, Piece, MB) ->
    garbage_collect(),
    Rss0 = rss(),
    {ok, B} = py_buffer:new(#{keep_consumed => false, max_unread => 1048576}),
    Self = self(),
    Sampler = spawn_link(fun() -> sample(Rss0) end),
    T0 = erlang:monotonic_time(microsecond),
    spawn_link(fun() -> Self ! {read, py:call(Target, nodes_bench, drain, [B], #{})} end),
    [ok = py_buffer:write(B, Piece) || _ <- lists:seq(1, MB)],
    ok = py_buffer:close(B),
    {ok, {Bytes, WorkerPeakRss}} = receive {read, R} -> R end,
    Bytes = MB * 1048576,
    Elapsed = erlang:monotonic_time(microsecond) - T0,
    Sampler ! {stop, self()},
    Peak = receive {peak, P} -> P end,
    WorkerBase = case Target of any -> WorkerPeakRss; _ -> worker_rss(1) end,
    {Bytes / Elapsed, (Peak - Rss0) / 1048576, (WorkerPeakRss - WorkerBase) / 1048576}.

sample(Peak) ->
    receive {stop, From} -> From ! {peak, max(Peak, rss())}
    after 20 -> sample(max(Peak, rss()))
    end.

worker_rss(I) ->
    {ok, R} = py:call(py:worker_node(I), nodes_bench, rss, [], #{}),
    R.

rss() ->
    {ok, Status} = file:read_file("/proc/self/status"),
    [_, Rest] = binary:split(Status, <<"VmRSS:">>),
    [Kb | _] = string:lexemes(Rest, " \t\n"),
    binary_to_integer(Kb) * 1024.

memory(Workers) ->
    Rss = fun(P) ->
                  {ok, S} = file:read_file("/proc/" ++ integer_to_list(P) ++ "/status"),
                  [_, Rest] = binary:split(S, <<"VmRSS:">>),
                  [Kb | _] = string:lexemes(Rest, " \t\n"),
                  binary_to_integer(Kb) / 1024
          end,
    io:format("  RSS per worker node (after the runs above): ~s MB; this node: ~.1f MB~n",
              [lists:join(", ", [io_lib:format("~.1f", [Rss(P)]) || P <- Workers]),
               rss() / 1048576]).

loadavg() ->
    {ok, L} = file:read_file("/proc/loadavg"),
    hd(string:lexemes(binary_to_list(L), " ")).
