%% @doc Call-bridge benchmark: `py:call(operator, add, [1, 2])' against a
%% Python process behind an Erlang port (bench/port_echo.py), measured in the
%% same run.
%%
%% Run with `make bench-call', or by hand from the repository root:
%% ```
%% erlc -o bench/ebin bench/bench_call.erl
%% erl -noshell -pa _build/default/lib/erlpy/ebin -pa bench/ebin -s bench_call main
%% '''
%% What it measures (see docs/performance.md):
%% <ul>
%% <li>single caller: round-trip latency, each call timed on its own with
%%     `erlang:monotonic_time(nanosecond)'; median and p99;</li>
%% <li>8 concurrent callers: calls per second, each caller calling in a loop.</li>
%% </ul>
%% The port baseline is what users do without erlpy: one Python process behind
%% a port ({packet, 4}, binary), request `term_to_binary({add, 1, 2})', reply
%% `{ok, 3}' decoded with `binary_to_term'.  For 8 callers that port is owned
%% by one server process that serialises the requests; 8 ports (8 Python
%% processes, one per caller) are shown as an extra row.
%%
%% The machine may be shared and noisy, so the systems are measured in
%% alternating rounds and the figure that matters is the ratio.
-module(bench_call).

-export([main/0, run/0]).

-define(LATENCY_ROUNDS, 10).
-define(LATENCY_SAMPLES, 2000).      %% per round and system: 20,000 in all
-define(WARMUP_CALLS, 5000).
-define(CALLERS, 8).
-define(THROUGHPUT_ROUNDS, 6).
-define(THROUGHPUT_MS, 500).         %% per round and system: 3 s in all
-define(TARGET_MEDIAN_NS, 10000).
-define(TARGET_RATIO, 10).
-define(REQUEST, {add, 1, 2}).

%% @doc Runs the benchmark, prints the table and halts the VM (0 on success,
%% 1 if the benchmark itself failed; missed targets are reported, not fatal).
-spec main() -> no_return().
main() ->
    bench_lib:main("bench_call", fun run/0).

%% @doc Runs the benchmark and prints the table, without halting.
-spec run() -> ok.
run() ->
    {ok, _} = application:ensure_all_started(erlpy),
    {ok, 3} = py:call(operator, add, [1, 2]),
    Python = os:getenv("PYTHON", "/usr/bin/python3"),
    Script = port_script(),
    Port = open(Python, Script),
    3 = port_call(Port),
    Ctx = py:context(1),
    Systems = #{erlpy => fun erlpy_call/0,
                erlpy_ctx => fun() -> erlpy_call(Ctx) end,
                port => {port, Port, fun() -> port_call(Port) end}},
    io:format("erlpy call bridge: py:call(operator, add, [1, 2]) vs a port to ~s ~s~n",
              [Python, filename:basename(Script)]),
    io:format("~s~n~n", [machine()]),
    %% Warm up: imports, code loading, caches, the Python process.
    _ = [begin _ = [F() || _ <- lists:seq(1, ?WARMUP_CALLS)] end
         || F0 <- maps:values(Systems), F <- [unwrap(F0)]],
    Overhead = timer_overhead(),
    Order = [erlpy, port, erlpy_ctx],
    Lat = latency_rounds(Order, Systems, ?LATENCY_ROUNDS),
    Server = port_server(Python, Script),
    Thr = throughput_rounds(Python, Script, Server, ?THROUGHPUT_ROUNDS),
    Server ! stop,
    port_close(Port),
    report(Lat, Thr, Overhead).

%% ------------------------------------------------------------ the calls

unwrap({port, _Port, Fun}) -> Fun;
unwrap(Fun) -> Fun.

erlpy_call() ->
    {ok, 3} = py:call(operator, add, [1, 2]),
    3.

erlpy_call(Ctx) ->
    {ok, 3} = py:call(Ctx, operator, add, [1, 2]),
    3.

port_call(Port) ->
    true = port_command(Port, term_to_binary(?REQUEST)),
    receive
        {Port, {data, Reply}} ->
            {ok, 3} = binary_to_term(Reply),
            3;
        {Port, {exit_status, S}} ->
            error({port_exited, S})
    end.

open(Python, Script) ->
    open_port({spawn_executable, Python},
              [{args, [Script]}, {packet, 4}, binary, use_stdio, exit_status]).

port_script() ->
    Ebin = filename:dirname(code:which(?MODULE)),
    Candidates = [filename:join(Ebin, "port_echo.py"),
                  filename:join([Ebin, "..", "port_echo.py"]),
                  filename:join("bench", "port_echo.py")],
    case [F || F <- Candidates, filelib:is_regular(F)] of
        [F | _] -> filename:absname(F);
        [] -> error({not_found, "port_echo.py", Candidates})
    end.

%% One port owned by a server process that serialises the requests, as a
%% gen_server wrapping a port does: the callers encode and decode.
port_server(Python, Script) ->
    Parent = self(),
    Pid = spawn_link(fun() ->
                             Port = open(Python, Script),
                             Parent ! {self(), ready},
                             server_loop(Port)
                     end),
    receive {Pid, ready} -> Pid end.

server_loop(Port) ->
    receive
        {call, From, Ref, Request} ->
            true = port_command(Port, Request),
            receive
                {Port, {data, Reply}} -> From ! {Ref, Reply};
                {Port, {exit_status, S}} -> exit({port_exited, S})
            end,
            server_loop(Port);
        stop ->
            port_close(Port)
    end.

server_call(Server) ->
    Ref = make_ref(),
    Server ! {call, self(), Ref, term_to_binary(?REQUEST)},
    receive
        {Ref, Reply} ->
            {ok, 3} = binary_to_term(Reply),
            3
    end.

%% ------------------------------------------------------------ latency

%% Rounds alternate the systems so that drift on a shared machine hits all of
%% them; the samples of all rounds are pooled.  Returns
%% #{System => {SortedSamples, [RoundMedian]}}.
latency_rounds(Order, Systems, Rounds) ->
    Per = [{Name, sample(maps:get(Name, Systems), ?LATENCY_SAMPLES)}
           || _ <- lists:seq(1, Rounds), Name <- Order],
    maps:from_list(
      [{Name, {lists:sort(lists:append(All)), [median(lists:sort(S)) || S <- All]}}
       || Name <- Order,
          All <- [[S || {N, S} <- Per, N =:= Name]]]).

%% N round trips, each timed on its own, in a fresh process with a heap big
%% enough that garbage collection stays out of the samples.  A port changes
%% owner for the duration, so its replies reach the sampling process.
sample({port, Port, Fun}, N) ->
    Parent = self(),
    in_process(fun() ->
                       receive {Parent, owner} -> ok end,
                       S = sample(Fun, N, []),
                       true = port_connect(Port, Parent),
                       unlink(Port),
                       S
               end,
               fun(Pid) -> true = port_connect(Port, Pid), unlink(Port), Pid ! {Parent, owner} end);
sample(Fun, N) ->
    in_process(fun() -> sample(Fun, N, []) end, fun(_) -> ok end).

sample(_Fun, 0, Acc) ->
    Acc;
sample(Fun, N, Acc) ->
    T0 = erlang:monotonic_time(nanosecond),
    3 = Fun(),
    T1 = erlang:monotonic_time(nanosecond),
    sample(Fun, N - 1, [T1 - T0 | Acc]).

in_process(Fun, Handover) ->
    Parent = self(),
    {Pid, Mon} = spawn_opt(fun() -> Parent ! {self(), result, Fun()} end,
                           [monitor, {min_heap_size, 4 * ?LATENCY_SAMPLES * 8}]),
    _ = Handover(Pid),
    receive
        {Pid, result, R} -> erlang:demonitor(Mon, [flush]), R;
        {'DOWN', Mon, process, Pid, Other} -> error(Other)
    end.

%% Median cost of the two clock reads around an empty call.
timer_overhead() ->
    median(lists:sort(sample(fun() -> 3 end, 20000))).

%% ------------------------------------------------------------ throughput

%% Returns #{System => [{Calls, ElapsedNs}]}, one entry per round.
throughput_rounds(Python, Script, Server, Rounds) ->
    %% ports8: each caller opens its own port (a Python process) before the
    %% round starts, so start-up is not timed; the port closes when it exits.
    Setups = [{erlpy, fun() -> fun erlpy_call/0 end},
              {port, fun() -> fun() -> server_call(Server) end end},
              {ports8, fun() ->
                               P = open(Python, Script),
                               3 = port_call(P),
                               fun() -> port_call(P) end
                       end}],
    Per = [{Name, burst(Setup, ?CALLERS, ?THROUGHPUT_MS)}
           || _ <- lists:seq(1, Rounds), {Name, Setup} <- Setups],
    maps:from_list([{Name, [R || {N, R} <- Per, N =:= Name]} || {Name, _} <- Setups]).

%% `Callers' processes call in a loop for Ms milliseconds, all starting together.
burst(Setup, Callers, Ms) ->
    Parent = self(),
    Pids = [spawn_link(fun() -> caller(Parent, Setup) end) || _ <- lists:seq(1, Callers)],
    _ = [receive {P, ready} -> ok end || P <- Pids],
    Start = erlang:monotonic_time(nanosecond),
    Deadline = Start + Ms * 1000000,
    _ = [P ! {go, Deadline} || P <- Pids],
    Results = [receive {P, done, Count, End} -> {Count, End} end || P <- Pids],
    Calls = lists:sum([C || {C, _} <- Results]),
    Last = lists:max([E || {_, E} <- Results]),
    {Calls, Last - Start}.

caller(Parent, Setup) ->
    Fun = Setup(),
    Parent ! {self(), ready},
    receive {go, Deadline} -> ok end,
    Count = loop(Fun, Deadline, 0),
    Parent ! {self(), done, Count, erlang:monotonic_time(nanosecond)}.

loop(Fun, Deadline, N) ->
    case erlang:monotonic_time(nanosecond) < Deadline of
        true -> 3 = Fun(), loop(Fun, Deadline, N + 1);
        false -> N
    end.

rate({Calls, Ns}) -> Calls * 1.0e9 / Ns.

total_rate(Rounds) ->
    rate({lists:sum([C || {C, _} <- Rounds]), lists:sum([T || {_, T} <- Rounds])}).

%% ------------------------------------------------------------ report

median(Sorted) -> percentile(Sorted, 50).

percentile(Sorted, P) ->
    N = length(Sorted),
    lists:nth(max(1, min(N, ceil(N * P / 100))), Sorted).

report(Lat, Thr, Overhead) ->
    {ESorted, ERounds} = maps:get(erlpy, Lat),
    {PSorted, PRounds} = maps:get(port, Lat),
    {CSorted, _} = maps:get(erlpy_ctx, Lat),
    EMed = median(ESorted), PMed = median(PSorted),
    EP99 = percentile(ESorted, 99), PP99 = percentile(PSorted, 99),
    ERate = total_rate(maps:get(erlpy, Thr)),
    PRate = total_rate(maps:get(port, Thr)),
    P8Rate = total_rate(maps:get(ports8, Thr)),
    MedRatios = [P / E || {E, P} <- lists:zip(ERounds, PRounds)],
    RateRatios = [rate(E) / rate(P)
                  || {E, P} <- lists:zip(maps:get(erlpy, Thr), maps:get(port, Thr))],
    io:format("~-40s ~12s ~12s ~10s~n", ["", "erlpy", "port", "ratio"]),
    row("single caller, median round trip", us(EMed), us(PMed), PMed / EMed),
    row("single caller, p99 round trip", us(EP99), us(PP99), PP99 / EP99),
    row(io_lib:format("~b callers, calls/s (1 port, serialised)", [?CALLERS]),
        kcps(ERate), kcps(PRate), ERate / PRate),
    io:format("~nratio = how many times erlpy is faster (port time / erlpy time,~n"
              "        erlpy calls/s / port calls/s); per round: median ~s, calls/s ~s~n",
              [range(MedRatios), range(RateRatios)]),
    io:format("per-round medians (us): erlpy ~s~n"
              "                        port  ~s~n",
              [round_list(ERounds), round_list(PRounds)]),
    io:format("~nextra rows (same run):~n"),
    io:format("  erlpy on context 1 (py:call(py:context(1), ...)): median ~s, p99 ~s~n",
              [us(median(CSorted)), us(percentile(CSorted, 99))]),
    io:format("  ~b callers on ~b ports (one Python process each): ~s calls/s, "
              "erlpy ratio ~.2fx~n", [?CALLERS, ?CALLERS, kcps(P8Rate), ERate / P8Rate]),
    io:format("  clock overhead per sample: ~b ns; samples: ~b per system; "
              "throughput: ~b x ~b ms per system~n",
              [Overhead, length(ESorted), ?THROUGHPUT_ROUNDS, ?THROUGHPUT_MS]),
    io:format("~ntargets: median <= ~b us: ~s (~s); >= ~bx the port: ~s (median ~.1fx, "
              "calls/s ~.1fx)~n",
              [?TARGET_MEDIAN_NS div 1000, met(EMed =< ?TARGET_MEDIAN_NS), us(EMed),
               ?TARGET_RATIO, met(PMed / EMed >= ?TARGET_RATIO andalso
                                  ERate / PRate >= ?TARGET_RATIO),
               PMed / EMed, ERate / PRate]),
    ok.

row(Label, E, P, Ratio) ->
    io:format("~-40s ~12s ~12s ~9.2fx~n", [Label, E, P, Ratio]).

us(Ns) -> io_lib:format("~.1f us", [Ns / 1000]).

kcps(Rate) -> io_lib:format("~b", [round(Rate)]).

round_list(Ns) ->
    lists:join(" ", [io_lib:format("~.1f", [N / 1000]) || N <- Ns]).

range(Ratios) ->
    io_lib:format("~.2f-~.2fx", [lists:min(Ratios), lists:max(Ratios)]).

met(true) -> "met";
met(false) -> "NOT met".

machine() ->
    Load = case file:read_file("/proc/loadavg") of
               {ok, B} -> hd(string:split(string:trim(B), " "));
               _ -> "?"
           end,
    io_lib:format("OTP ~s, ~b schedulers online, ~p logical CPUs, load average ~s",
                  [erlang:system_info(otp_release),
                   erlang:system_info(schedulers_online),
                   erlang:system_info(logical_processors_available), Load]).
