%% @doc Worker nodes against one GIL and against Python processes behind
%% ports (make bench-nodes; docs/performance.md, "Worker nodes").
%%
%% 1. CPU-bound: a pure-Python function of about 2 ms (bench/nodes_bench.py
%%    burn/1, calibrated at start) called by 8 Erlang processes for
%%    BENCH_SECONDS (default 5) each way: local contexts (one interpreter,
%%    one GIL), `worker_nodes' (2 worker nodes), and two Python processes
%%    behind ports (bench/port_burn.py, 4-byte requests: the cheapest
%%    possible transport).  Calls/s, the ratios, and CPU ms per call (all
%%    the OS processes involved, from /proc).
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
    {ok, N} = py:call(nodes_bench, calibrate, [2]),
    io:format("bench_nodes: ~b CPUs, load ~s; burn(~b) is about 2 ms; ~b callers, ~b s each~n",
              [erlang:system_info(logical_processors_available), loadavg(), N, ?PROCS, Seconds]),
    Me = list_to_integer(os:getpid()),
    Local = measure(fun() -> {ok, _} = py:call(nodes_bench, burn, [N]) end, [Me], Seconds),
    Nodes = measure(fun() -> {ok, _} = py:call(worker_nodes, nodes_bench, burn, [N]) end,
                    [Me | Workers], Seconds),
    {Ports, PortPids} = ports(Bench),
    %% The least busy port, as worker_nodes picks the least busy node.
    Busy = atomics:new(2, []),
    PortCall = fun() ->
                       I = case atomics:get(Busy, 1) =< atomics:get(Busy, 2) of true -> 1; false -> 2 end,
                       atomics:add(Busy, I, 1),
                       P = lists:nth(I, Ports),
                       P ! {call, self(), N},
                       receive {P, _} -> atomics:sub(Busy, I, 1) end
               end,
    Portsr = measure(PortCall, [Me | PortPids], Seconds),
    [P ! stop || P <- Ports],
    row("local contexts (one GIL)", Local, Local, Portsr),
    row("2 worker nodes", Nodes, Local, Portsr),
    row("2 Python processes (ports)", Portsr, Local, Portsr),
    stream(),
    memory(Workers),
    ok = application:stop(erlpy).

%% {Calls per second, CPU ms per call} of ?PROCS processes calling Call.
measure(Call, Pids, Seconds) ->
    Cpu0 = cpu(Pids),
    T0 = erlang:monotonic_time(millisecond),
    Deadline = T0 + Seconds * 1000,
    Self = self(),
    [spawn_link(fun() -> Self ! {done, loop(Call, Deadline, 0)} end) || _ <- lists:seq(1, ?PROCS)],
    Calls = lists:sum([receive {done, C} -> C end || _ <- lists:seq(1, ?PROCS)]),
    Elapsed = erlang:monotonic_time(millisecond) - T0,
    {Calls * 1000 / Elapsed, (cpu(Pids) - Cpu0) / Calls}.

loop(Call, Deadline, N) ->
    case erlang:monotonic_time(millisecond) < Deadline of
        true -> Call(), loop(Call, Deadline, N + 1);
        false -> N
    end.

row(Label, {Rate, Cpu}, {Local, _}, {Ports, _}) ->
    io:format("  ~-30s ~8.1f calls/s  ~5.2fx one GIL  ~5.2fx ports  ~6.2f CPU ms/call~n",
              [Label, Rate, Rate / Local, Rate / Ports, Cpu]).

%% Two Python processes behind ports, each owned by a process that runs one
%% request at a time.
ports(Bench) ->
    Python = os:getenv("PYTHON", "/usr/bin/python3"),
    Script = filename:join(Bench, "port_burn.py"),
    Self = self(),
    Owners = [spawn_link(fun() ->
                                 Port = open_port({spawn_executable, Python},
                                                  [{args, [Script]}, {packet, 4}, binary]),
                                 {os_pid, OsPid} = erlang:port_info(Port, os_pid),
                                 Self ! {os_pid, self(), OsPid},
                                 port_loop(Port)
                         end) || _ <- [1, 2]],
    {Owners, [receive {os_pid, O, P} -> P end || O <- Owners]}.

port_loop(Port) ->
    receive
        {call, From, N} ->
            true = port_command(Port, <<N:32>>),
            receive {Port, {data, R}} -> From ! {self(), R} end,
            port_loop(Port);
        stop ->
            port_close(Port)
    end.

%% utime + stime of these OS processes, in ms.
cpu(Pids) ->
    lists:sum([begin
                   {ok, Stat} = file:read_file("/proc/" ++ integer_to_list(P) ++ "/stat"),
                   [_, After] = binary:split(Stat, <<")">>),
                   Fields = string:lexemes(binary_to_list(After), " "),
                   (list_to_integer(lists:nth(12, Fields)) + list_to_integer(lists:nth(13, Fields))) * 10
               end || P <- Pids]).

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
