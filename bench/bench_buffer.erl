%% @doc Streaming buffer benchmark: `py_buffer' (Erlang writes) and
%% `erlang.PyBuffer' (Python reads), against baselines measured in the same
%% run.  The Python side is bench/buffer_bench.py.
%%
%% Run with `make bench-buffer', or by hand from the repository root:
%% ```
%% erlc -o bench/ebin bench/bench_buffer.erl
%% erl -noshell -pa _build/default/lib/erlpy/ebin -pa bench/ebin -s bench_buffer main
%% '''
%% What it measures (see docs/performance.md, "Streaming buffer"):
%% <ol>
%% <li>Streaming 256 MiB: an Erlang process writes fresh 64 KiB binaries
%%     while Python (`py:call' on a worker) reads them with `read(65536)'.
%%     MB/s, peak RSS growth of the VM (VmRSS sampled every 2 ms), the
%%     longest `py_buffer:write/2' call.  With `keep_consumed => false,
%%     max_unread => 8 MiB' and with the default options.  Baselines: a C
%%     `memcpy' of the same 256 MiB in 64 KiB pieces (compiled with gcc at
%%     bench time; ctypes.memmove in a python3 process without gcc), and an
%%     Erlang port into a python3 process reading its stdin in 64 KiB reads.</li>
%% <li>The same stream consumed with `readinto' into one bytearray, with
%%     `memoryview(buf)' + `seek' (zero-copy; seek needs `keep_consumed', so
%%     that row runs with `max_unread => 8 MiB' and consumed data kept), and
%%     with `readview()' (zero-copy, bounded options).</li>
%% <li>`readline' over 64 MiB of 100-byte lines: PyBuffer vs io.BytesIO.</li>
%% <li>`find' of a missing 20-byte needle in 256 MiB: PyBuffer.find vs
%%     bytes.find, and glibc memmem (ctypes) on the same bytes.</li>
%% </ol>
%% The machine may be shared and noisy: systems are measured in alternating
%% rounds (the order reversed every other round) and the figures that matter
%% are the ratios, computed per round and summarised by their median.
%% Diagnostic rows (a writer that allocates nothing; the write NIF timed
%% apart from the backpressure wait) and per-run page faults, CPU time of the
%% VM's threads and long_schedule events say where the time goes.  Instruction
%% counts, steady where timings are not: `make bench-buffer-callgrind'.
-module(bench_buffer).

-export([main/0, run/0]).

-define(MiB, 1048576).
-define(TOTAL, (256 * ?MiB)).
-define(PIECE, 65536).
-define(WARMUP_TOTAL, (32 * ?MiB)).
-define(BOUNDED, #{keep_consumed => false, max_unread => 8 * ?MiB}).
-define(STREAM_ROUNDS, 9).
-define(RSS_EVERY_MS, 2).
-define(LINE_LEN, 100).
-define(LINES_TOTAL, (64 * ?MiB)).
-define(LINE_ROUNDS, 9).
-define(FIND_ROUNDS, 5).
-define(FIND_TRIES, 3).     %% per system per round, the fastest kept
-define(NEEDLE, <<"--erlpy-bench-needle">>).    %% 20 bytes, in neither data set
%% Targets (from the issue).
-define(T_STREAM_MBS, 3000).
-define(T_STREAM_VS_PORT, 2.5).
-define(T_RSS_MIB, 64).
-define(T_WRITE_US, 1000).
-define(T_ZEROCOPY_MBS, 5000).
-define(T_READLINE, 0.8).
-define(T_FIND, 0.9).  %% of one glibc memmem over the same bytes

%% @doc Runs the benchmark, prints the tables and halts the VM (0 on success,
%% 1 if the benchmark itself failed; missed targets are reported, not fatal).
-spec main() -> no_return().
main() ->
    bench_lib:main("bench_buffer", fun run/0).

%% @doc Runs the benchmark and prints the tables, without halting.
-spec run() -> ok.
run() ->
    Started = erlang:monotonic_time(millisecond),
    BenchDir = bench_dir(),
    ok = case application:load(erlpy) of
             ok -> ok;
             {error, {already_loaded, erlpy}} -> ok
         end,
    ok = application:set_env(erlpy, python_path, [BenchDir]),
    {ok, _} = application:ensure_all_started(erlpy),
    case py:call(buffer_bench, keep_bytes, [check, <<>>]) of
        {ok, 0} -> ok;
        {error, _} -> %% erlpy was already running: python_path came too late
            {ok, _} = py:eval(<<"__import__('sys').path.insert(0, d.decode())">>,
                              #{d => unicode:characters_to_binary(BenchDir)}),
            {ok, 0} = py:call(buffer_bench, keep_bytes, [check, <<>>])
    end,
    Python = os:getenv("PYTHON", "/usr/bin/python3"),
    Script = filename:join(BenchDir, "buffer_bench.py"),
    Memcpy = memcpy_baseline(Python, Script),
    io:format("erlpy streaming buffer: py_buffer (Erlang writes) -> erlang.PyBuffer (Python reads)~n"),
    io:format("~s~n", [machine()]),
    %% Random bytes: what a body or an upload looks like to memcpy and memmem.
    Tpl = rand:bytes(?PIECE),
    Port = port_owner(Python, Script),
    try stream_phase(Tpl, Port, Memcpy)
    after
        Port ! stop,
        _ = file:del_dir_r(get(memcpy_dir))
    end,
    line_phase(),
    find_phase(Tpl),
    io:format("~ntotal time: ~.1f s~n", [(erlang:monotonic_time(millisecond) - Started) / 1000]),
    ok.

bench_dir() ->
    Ebin = filename:dirname(code:which(?MODULE)),
    Candidates = [Ebin, filename:join(Ebin, ".."), "bench"],
    case [D || D <- Candidates, filelib:is_regular(filename:join(D, "buffer_bench.py"))] of
        [D | _] -> filename:absname(D);
        [] -> error({not_found, "buffer_bench.py", Candidates})
    end.

%% ================================================================ 1 and 2: streaming

%% {Name, Label, Kind}.  Kind: {erlpy, PythonConsumer, Options, Writer}
%% (Writer: fresh, a new 64 KiB binary per write; same, one binary written
%% again and again: a writer that allocates nothing; nif, fresh binaries
%% with the write NIF timed alone), port, memcpy.
systems() ->
    [{read_bounded, "erlpy read(65536), bounded", {erlpy, consume_read, ?BOUNDED, fresh}},
     {read_default, "erlpy read(65536), default options", {erlpy, consume_read, #{}, fresh}},
     {readinto_bounded, "erlpy readinto(bytearray), bounded", {erlpy, consume_readinto, ?BOUNDED, fresh}},
     {view_kept, "erlpy memoryview + seek, max_unread 8 MiB", {erlpy, consume_view, #{max_unread => 8 * ?MiB}, fresh}},
     {readview_bounded, "erlpy readview(), bounded", {erlpy, consume_readview, ?BOUNDED, fresh}},
     {port, "port, python3 stdin read(65536)", port},
     {memcpy, "C memcpy, 64 KiB pieces", memcpy},
     %% diagnostics: the same consumers fed by a writer that allocates nothing
     {read_default_same, "read(65536), default, same binary", {erlpy, consume_read, #{}, same}},
     {view_kept_same, "memoryview + seek, same binary", {erlpy, consume_view, #{max_unread => 8 * ?MiB}, same}},
     %% the bounded read again, with the write NIF timed apart from the backpressure wait
     {read_bounded_nif, "read(65536), bounded, NIF timed", {erlpy, consume_read, ?BOUNDED, nif}}].

stream_phase(Tpl, Port, Memcpy) ->
    Systems = systems(),
    %% Warm-up: code, imports, allocators, the port's Python process.  The
    %% first run is a whole bounded stream, in allocators that have not served
    %% one yet: its RSS growth is printed as the cold case.
    [{_, _, First} | _] = Systems,
    Cold = run_system(First, Tpl, Port, Memcpy, ?TOTAL),
    _ = [run_system(Kind, Tpl, Port, Memcpy, ?WARMUP_TOTAL) || {_, _, Kind} <- Systems],
    Results = lists:append(
                [[{Name, run_system(Kind, Tpl, Port, Memcpy, ?TOTAL)}
                  || {Name, _, Kind} <- order(Round, Systems)]
                 || Round <- lists:seq(1, ?STREAM_ROUNDS)]),
    By = maps:from_list([{Name, [R || {N, R} <- Results, N =:= Name]} || {Name, _, _} <- Systems]),
    report_stream(Systems, By, Cold).

order(Round, List) when Round rem 2 =:= 1 -> List;
order(_, List) -> lists:reverse(List).

%% Each run in a process of its own, so that nothing of it (the buffer, the
%% binaries) outlives it.  Returns a map: bytes, ns, py_ns, extra, rss_peak,
%% rss_hwm (growth over the VM's RSS at the start, bytes), buf_mem (highest
%% `memory' of the buffer), faults (minor page faults of the VM), writes (ns
%% each), long (long_schedule events of the writer: [Ms]).
run_system(Kind, Tpl, Port, Memcpy, Total) ->
    Parent = self(),
    {Pid, Mon} = spawn_opt(fun() -> Parent ! {self(), measured(Kind, Tpl, Port, Memcpy, Total)} end,
                           [monitor, {min_heap_size, 65536}]),
    receive
        {Pid, R} ->
            erlang:demonitor(Mon, [flush]),
            timer:sleep(20), %% let the buffer's storage go before the next run
            R;
        {'DOWN', Mon, process, Pid, Reason} ->
            error({run_failed, Kind, Reason})
    end.

measured(memcpy, _Tpl, _Port, Memcpy, Total) ->
    Ns = Memcpy(Total),
    #{bytes => Total, ns => Ns, py_ns => Ns, extra => 0, rss_peak => undefined,
      rss_hwm => undefined, writes => [], long => [], buf_mem => undefined, faults => undefined,
      cpu => undefined};
measured(Kind, Tpl, Port, _Memcpy, Total) ->
    Rss0 = rss_start(),
    Faults0 = minor_faults(),
    Cpu0 = cpu_ns(),
    Sampler = rss_sampler(Rss0),
    %% The system monitor must be another process: events about the
    %% monitoring process itself are not reported.
    Monitor = spawn_link(fun() -> collect_long([]) end),
    _ = erlang:system_monitor(Monitor, [{long_schedule, 1}]),
    R = case Kind of
            port -> stream_port(Port, Tpl, Total);
            {erlpy, Consumer, Opts, How} -> stream_erlpy(Consumer, Opts, How, Tpl, Total, Sampler)
        end,
    _ = erlang:system_monitor(undefined),
    {Peak, BufMem} = rss_stop(Sampler),
    Hwm = vm_kib(<<"VmHWM:">>) * 1024,
    Writer = case Kind of port -> Port; _ -> self() end,
    Monitor ! {get, self()},
    Long = receive {Monitor, Events} -> [Ms || {Who, Ms} <- Events, Who =:= Writer orelse is_port(Who)] end,
    R#{rss_peak => Peak - Rss0, rss_hwm => Hwm - Rss0, long => Long, buf_mem => BufMem,
       faults => minor_faults() - Faults0,
       cpu => case Kind of port -> undefined; _ -> cpu_ns() - Cpu0 end}.

collect_long(Acc) ->
    receive
        {monitor, Who, long_schedule, Info} ->
            collect_long([{Who, proplists:get_value(timeout, Info)} | Acc]);
        {get, From} ->
            From ! {self(), Acc}
    end.

%% Minor page faults of the VM process so far (all its threads, Python's too).
minor_faults() ->
    {ok, Stat} = file:read_file("/proc/self/stat"),
    [_, AfterComm] = binary:split(Stat, <<") ">>),
    %% fields from 3 (state) on; minflt is field 10
    binary_to_integer(lists:nth(8, binary:split(AfterComm, <<" ">>, [global]))).

%% CPU time of the VM's threads so far (writer, schedulers, the Python
%% worker reading), ns: the first field of /proc/self/task/*/schedstat.  A
%% thread that ended meanwhile is not counted (none does during a run).
cpu_ns() ->
    {ok, Tids} = file:list_dir("/proc/self/task"),
    lists:sum([case file:read_file("/proc/self/task/" ++ T ++ "/schedstat") of
                   {ok, B} -> binary_to_integer(hd(binary:split(B, <<" ">>)));
                   {error, _} -> 0
               end || T <- Tids]).

%% The writer is this process; the reader a py:call made from another one,
%% which must be blocked in its first read before the clock starts.
stream_erlpy(Consumer, Opts, Writer, Tpl, Total, Sampler) ->
    Self = self(),
    {ok, Buf} = py_buffer:new(Opts),
    Sampler ! {watch, Buf},
    spawn_link(fun() ->
                       R = py:call(buffer_bench, Consumer, [Buf]),
                       Self ! {reader, erlang:monotonic_time(nanosecond), R}
               end),
    ok = reader_waiting(Buf, 2000),
    T0 = erlang:monotonic_time(nanosecond),
    Writes = write_loop(Buf, Tpl, Writer, Total div ?PIECE, []),
    ok = py_buffer:close(Buf),
    receive
        {reader, T1, {ok, {Total, PyNs, Extra}}} ->
            #{bytes => Total, ns => T1 - T0, py_ns => PyNs, extra => Extra, writes => Writes};
        {reader, _, Other} ->
            error({reader, Consumer, Other})
    end.

reader_waiting(_Buf, 0) ->
    ok; %% start anyway: the figure then includes the reader's start
reader_waiting(Buf, N) ->
    case py_buffer:info(Buf) of
        #{waiting_readers := W} when W > 0 -> ok;
        _ -> timer:sleep(1), reader_waiting(Buf, N - 1)
    end.

write_loop(_Buf, _Tpl, _Writer, 0, Acc) ->
    Acc;
write_loop(Buf, Tpl, nif, N, Acc) ->
    %% py_buffer:write/2 in two steps: the NIF (what holds the scheduler),
    %% then, if it asked to wait, py_buffer:write(Buf, <<>>), which appends
    %% nothing and waits for the drain as write/2 does.  Only the NIF is
    %% recorded.
    Bin = binary:copy(Tpl),
    T0 = erlang:monotonic_time(nanosecond),
    R = py_nif:buffer_write(Buf, Bin),
    T1 = erlang:monotonic_time(nanosecond),
    ok = case R of
             ok -> ok;
             wait -> py_buffer:write(Buf, <<>>);
             {wait, _} -> py_buffer:write(Buf, <<>>)
         end,
    write_loop(Buf, Tpl, nif, N - 1, [T1 - T0 | Acc]);
write_loop(Buf, Tpl, Writer, N, Acc) ->
    Bin = case Writer of
              fresh -> binary:copy(Tpl);
              same -> Tpl
          end,
    T0 = erlang:monotonic_time(nanosecond),
    ok = py_buffer:write(Buf, Bin),
    T1 = erlang:monotonic_time(nanosecond),
    write_loop(Buf, Tpl, Writer, N - 1, [T1 - T0 | Acc]).

%% ------------------------------------------------------------ port baseline

%% One python3 process behind a port for the whole run (as erlpy's workers
%% are), owned by a process that writes the stream itself when asked.
port_owner(Python, Script) ->
    Parent = self(),
    Pid = spawn_link(fun() ->
                             Port = open_port({spawn_executable, Python},
                                              [{args, [Script, "port-reader"]}, stream,
                                               binary, use_stdio, exit_status]),
                             Parent ! {self(), ready},
                             port_loop(Port)
                     end),
    receive {Pid, ready} -> Pid end.

port_loop(Port) ->
    receive
        {run, From, Tpl, Total} ->
            T0 = erlang:monotonic_time(nanosecond),
            true = port_command(Port, <<Total:64>>),
            Writes = port_writes(Port, Tpl, Total div ?PIECE, []),
            Reply = port_reply(Port, <<>>),
            T1 = erlang:monotonic_time(nanosecond),
            Total = binary_to_integer(Reply),
            From ! {self(), #{bytes => Total, ns => T1 - T0, py_ns => T1 - T0, extra => 0,
                              writes => Writes}},
            port_loop(Port);
        stop ->
            port_close(Port)
    end.

port_writes(_Port, _Tpl, 0, Acc) ->
    Acc;
port_writes(Port, Tpl, N, Acc) ->
    Bin = binary:copy(Tpl),
    T0 = erlang:monotonic_time(nanosecond),
    true = port_command(Port, Bin),
    T1 = erlang:monotonic_time(nanosecond),
    port_writes(Port, Tpl, N - 1, [T1 - T0 | Acc]).

port_reply(Port, Acc) ->
    receive
        {Port, {data, Data}} ->
            case binary:split(<<Acc/binary, Data/binary>>, <<"\n">>) of
                [<<"ok ", N/binary>>, _] -> N;
                [Part] -> port_reply(Port, Part)
            end;
        {Port, {exit_status, S}} ->
            error({port_exited, S})
    end.

stream_port(Owner, Tpl, Total) ->
    Owner ! {run, self(), Tpl, Total},
    receive {Owner, R} -> R end.

%% ------------------------------------------------------------ memcpy baseline

memcpy_source() ->
    "#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n#include <time.h>\n"
    "/* memcpy of TOTAL bytes in PIECE pieces from one TOTAL-byte source (all\n"
    "   pages touched first) into one preallocated PIECE-byte buffer; prints ns. */\n"
    "int main(int argc, char **argv) {\n"
    "    if (argc != 3) return 2;\n"
    "    size_t total = strtoull(argv[1], 0, 10), piece = strtoull(argv[2], 0, 10);\n"
    "    char *src = malloc(total), *dst = malloc(piece);\n"
    "    if (!src || !dst) return 1;\n"
    "    memset(src, 0x5a, total);\n"
    "    memset(dst, 0, piece);\n"
    "    struct timespec a, b;\n"
    "    clock_gettime(CLOCK_MONOTONIC, &a);\n"
    "    for (size_t off = 0; off + piece <= total; off += piece) {\n"
    "        memcpy(dst, src + off, piece);\n"
    "        __asm__ __volatile__(\"\" : : \"r\"(dst) : \"memory\");\n"
    "    }\n"
    "    clock_gettime(CLOCK_MONOTONIC, &b);\n"
    "    printf(\"%lld\\n\", (long long)(b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec));\n"
    "    return 0;\n"
    "}\n".

%% Returns fun(Total) -> Ns, with a name for the report in the process
%% dictionary.  gcc -O2 if there is a gcc, else ctypes.memmove in python3.
%% The program is built in a temporary directory, removed at the end.
memcpy_baseline(Python, Script) ->
    Out = filename:join(os:getenv("TMPDIR", "/tmp"),
                        "erlpy_bench_buffer_" ++ os:getpid() ++ "_"
                        ++ integer_to_list(erlang:unique_integer([positive]))),
    put(memcpy_dir, Out),
    Src = filename:join(Out, "buffer_memcpy.c"),
    Exe = filename:join(Out, "buffer_memcpy"),
    Compiled = case os:find_executable("gcc") of
                   false -> false;
                   Gcc ->
                       ok = filelib:ensure_dir(Src),
                       ok = file:write_file(Src, memcpy_source()),
                       Cmd = Gcc ++ " -O2 -o " ++ Exe ++ " " ++ Src ++ " 2>&1 && echo compiled",
                       lists:suffix("compiled\n", os:cmd(Cmd))
               end,
    {Name, Run} = case Compiled of
                      true -> {"C memcpy (gcc -O2)", fun(T) -> Exe ++ " " ++ integer_to_list(T) end};
                      false -> {"ctypes.memmove in python3 (no gcc)",
                                fun(T) -> Python ++ " " ++ Script ++ " memmove " ++ integer_to_list(T) end}
                  end,
    put(memcpy_name, Name),
    fun(Total) ->
            Line = os:cmd(Run(Total) ++ " " ++ integer_to_list(?PIECE)),
            list_to_integer(string:trim(Line))
    end.

%% ------------------------------------------------------------ RSS

rss_start() ->
    %% "5" resets VmHWM to the current RSS (Linux >= 4.0); harmless if not.
    _ = file:write_file("/proc/self/clear_refs", <<"5">>),
    vm_kib(<<"VmRSS:">>) * 1024.

vm_kib(Field) ->
    {ok, Fd} = file:open("/proc/self/status", [read, raw, binary]),
    try field_kib(Fd, Field) after file:close(Fd) end.

field_kib(Fd, Field) ->
    {ok, Status} = file:pread(Fd, 0, 8192),
    [_, Rest] = binary:split(Status, Field),
    [Num | _] = string:lexemes(Rest, " \t\nkB"),
    binary_to_integer(Num).

%% A high-priority process that reads VmRSS every RSS_EVERY_MS ms and keeps
%% the highest value; told of a buffer, the highest `memory' of its info too.
rss_sampler(Rss0) ->
    Parent = self(),
    spawn_opt(fun() ->
                      {ok, Fd} = file:open("/proc/self/status", [read, raw, binary]),
                      sample_rss(Fd, Parent, none, Rss0, 0)
              end, [link, {priority, high}]).

sample_rss(Fd, Parent, Buf, Max, MaxMem) ->
    M = max(Max, field_kib(Fd, <<"VmRSS:">>) * 1024),
    Mem = case Buf of
              none -> MaxMem;
              _ -> max(MaxMem, maps:get(memory, py_buffer:info(Buf)))
          end,
    receive
        {watch, B} -> sample_rss(Fd, Parent, B, M, Mem);
        {stop, Parent} -> Parent ! {self(), M, case Buf of none -> undefined; _ -> Mem end}
    after ?RSS_EVERY_MS -> sample_rss(Fd, Parent, Buf, M, Mem)
    end.

rss_stop(Sampler) ->
    Sampler ! {stop, self()},
    receive {Sampler, M, Mem} -> {M, Mem} end.

%% ------------------------------------------------------------ streaming report

report_stream(Systems, By, Cold) ->
    Port = maps:get(port, By),
    Mem = maps:get(memcpy, By),
    io:format("~n1-2. Streaming ~b MiB in fresh 64 KiB binaries, Erlang writer -> Python reader, "
              "~b rounds~n", [?TOTAL div ?MiB, ?STREAM_ROUNDS]),
    io:format("     bounded = keep_consumed => false, max_unread => 8 MiB; default = keep_consumed "
              "=> true, no max_unread~n~n"),
    io:format("~-44s ~8s ~9s ~9s ~9s ~9s ~9s ~9s ~10s ~5s ~8s~n",
              ["", "MB/s", "vs port", "vs memcpy", "RSS peak", "RSS HWM", "buf mem", "faults",
               "max write", ">1ms", "CPU ms"]),
    Stats = maps:from_list(
              [{Name, stream_row(Label, maps:get(Name, By), Port, Mem)}
               || {Name, Label, _} <- Systems]),
    io:format("~nMB/s = 10^6 bytes/s, from the first write until py:call returned (port: until "
              "the reply), median of rounds.~n"
              "vs port / vs memcpy = median of the per-round ratios (this system's MB/s / the "
              "baseline's in the same round).~n"
              "RSS peak = highest VmRSS sampled every ~b ms minus VmRSS at the start of the run, "
              "worst round; RSS HWM = VmHWM (reset per run) minus the same; buf mem = highest `memory' of "
              "py_buffer:info/1 (sampled likewise), worst round; faults = minor page faults of the VM "
              "process during the run, median.~n"
              "max write = longest single py_buffer:write/2 (port: port_command/2; NIF timed: the "
              "write NIF alone), all rounds; >1ms = how many writes took longer.~n"
              "CPU ms = CPU time of all the VM's threads (writer, schedulers, Python reader; "
              "/proc/self/task/*/schedstat) per run, median: the work, whatever the machine's "
              "load did to the wall clock.~n"
              "memcpy baseline: ~s.~n",
              [?RSS_EVERY_MS, get(memcpy_name)]),
    io:format("~nwrite call times (ns each, all rounds pooled), by system:~n"),
    io:format("  ~-24s ~9s ~9s ~9s ~9s ~10s ~6s ~6s~n",
              ["", "median", "p99", "p99.9", "max", "sum >1ms", ">1ms", "sched"]),
    _ = [write_row(Name, maps:get(Name, By)) || {Name, _, K} <- Systems, K =/= memcpy],
    io:format("  sched = long_schedule events of the writer process (or the port): > 1 ms on a "
              "scheduler without yielding, whatever it did then (a write NIF, or binary:copy/1 "
              "page-faulting fresh memory).~n"
              "  A py_buffer:write/2 over 1 ms with no such event was waiting in a receive "
              "(backpressure), or the OS was not running the VM's threads.~n"),
    io:format("~ncold first run (read, bounded, before any other run): ~b MB/s, RSS peak growth ~s, "
              "VmHWM growth ~s, buf mem ~s~n",
              [round(mbs(Cold)), mib(maps:get(rss_peak, Cold)), mib(maps:get(rss_hwm, Cold)),
               mib(maps:get(buf_mem, Cold))]),
    io:format("~nper-round MB/s:~n"),
    _ = [io:format("  ~-24s ~s~n", [Name, lists:join(" ", [integer_to_list(round(mbs(R)))
                                                            || R <- maps:get(Name, By)])])
         || {Name, _, _} <- Systems],
    io:format("extra: short reads (fewer bytes than asked, last one included) read_bounded ~p, "
              "readinto_bounded ~p; view bytes merged (copied) per round ~s MiB~n",
              [lists:max([maps:get(extra, R) || R <- maps:get(read_bounded, By)]),
               lists:max([maps:get(extra, R) || R <- maps:get(readinto_bounded, By)]),
               lists:join(" ", [io_lib:format("~.1f", [maps:get(extra, R) / ?MiB])
                                || R <- maps:get(view_kept, By)])]),
    RB = maps:get(read_bounded, Stats),
    RD = maps:get(read_default, Stats),
    RI = maps:get(readinto_bounded, Stats),
    VK = maps:get(view_kept, Stats),
    io:format("~ntargets, streaming:~n"),
    target("read, bounded: >= 3000 MB/s", met(maps:get(mbs, RB) >= ?T_STREAM_MBS),
           "~b MB/s", [round(maps:get(mbs, RB))]),
    target("read, bounded: >= 2.5x the port", met(maps:get(vs_port, RB) >= ?T_STREAM_VS_PORT),
           "~.2fx", [maps:get(vs_port, RB)]),
    target("read, bounded: peak RSS growth < 64 MiB",
           met(maps:get(rss, RB) < ?T_RSS_MIB * ?MiB), "~.1f MiB (worst round)",
           [maps:get(rss, RB) / ?MiB]),
    target("read, bounded: no write over 1 ms", met(maps:get(max_write, RB) =< ?T_WRITE_US * 1000),
           "longest ~s, ~b over 1 ms", [us(maps:get(max_write, RB)), maps:get(over, RB)]),
    RN = maps:get(read_bounded_nif, Stats),
    target("read, bounded: no write NIF over 1 ms", met(maps:get(max_write, RN) =< ?T_WRITE_US * 1000),
           "longest ~s, ~b over 1 ms (NIF timed apart from the wait)",
           [us(maps:get(max_write, RN)), maps:get(over, RN)]),
    target("read, default options: >= 3000 MB/s", met(maps:get(mbs, RD) >= ?T_STREAM_MBS),
           "~b MB/s", [round(maps:get(mbs, RD))]),
    target("read, default options: >= 2.5x the port",
           met(maps:get(vs_port, RD) >= ?T_STREAM_VS_PORT), "~.2fx", [maps:get(vs_port, RD)]),
    target("read, default options: no write over 1 ms",
           met(maps:get(max_write, RD) =< ?T_WRITE_US * 1000),
           "longest ~s, ~b over 1 ms", [us(maps:get(max_write, RD)), maps:get(over, RD)]),
    target("readinto, bounded: >= 5000 MB/s", met(maps:get(mbs, RI) >= ?T_ZEROCOPY_MBS),
           "~b MB/s", [round(maps:get(mbs, RI))]),
    target("memoryview + seek: >= 5000 MB/s", met(maps:get(mbs, VK) >= ?T_ZEROCOPY_MBS),
           "~b MB/s", [round(maps:get(mbs, VK))]),
    RV = maps:get(readview_bounded, Stats),
    target("readview(), bounded: >= 5000 MB/s", met(maps:get(mbs, RV) >= ?T_ZEROCOPY_MBS),
           "~b MB/s", [round(maps:get(mbs, RV))]),
    ok.

stream_row(Label, Runs, PortRuns, MemRuns) ->
    Mbs = median([mbs(R) || R <- Runs]),
    VsPort = median([mbs(R) / mbs(P) || {R, P} <- lists:zip(Runs, PortRuns)]),
    VsMem = median([mbs(R) / mbs(M) || {R, M} <- lists:zip(Runs, MemRuns)]),
    Rss = max_or_undef([maps:get(rss_peak, R) || R <- Runs]),
    Hwm = max_or_undef([maps:get(rss_hwm, R) || R <- Runs]),
    Writes = lists:append([maps:get(writes, R) || R <- Runs]),
    MaxWrite = case Writes of [] -> undefined; _ -> lists:max(Writes) end,
    Over = length([W || W <- Writes, W > ?T_WRITE_US * 1000]),
    BufMem = max_or_undef([maps:get(buf_mem, R) || R <- Runs]),
    Faults = case [F || #{faults := F} <- Runs, F =/= undefined] of
                 [] -> "-";
                 Fs -> integer_to_list(median(Fs))
             end,
    Cpu = case [C || #{cpu := C} <- Runs, C =/= undefined] of
              [] -> "-";
              Cs -> io_lib:format("~.1f", [median(Cs) / 1.0e6])
          end,
    io:format("~-44s ~8b ~8.2fx ~8.2fx ~9s ~9s ~9s ~9s ~10s ~5s ~8s~n",
              [Label, round(Mbs), VsPort, VsMem, mib(Rss), mib(Hwm), mib(BufMem), Faults,
               us(MaxWrite), case Writes of [] -> "-"; _ -> integer_to_list(Over) end, Cpu]),
    #{mbs => Mbs, vs_port => VsPort, rss => Rss, max_write => MaxWrite, over => Over}.

mbs(#{bytes := B, ns := Ns}) -> B * 1000 / Ns.

write_row(Name, Runs) ->
    W = lists:sort(lists:append([maps:get(writes, R) || R <- Runs])),
    Long = [X || X <- W, X > ?T_WRITE_US * 1000],
    io:format("  ~-24s ~9s ~9s ~9s ~9s ~10s ~6b ~6b~n",
              [Name, us1(percentile(W, 50)), us1(percentile(W, 99)), us1(percentile(W, 99.9)),
               us1(lists:last(W)), us1(lists:sum(Long)), length(Long),
               length(lists:append([maps:get(long, R) || R <- Runs]))]).

percentile(Sorted, P) ->
    N = length(Sorted),
    lists:nth(max(1, min(N, ceil(N * P / 100))), Sorted).

us1(Ns) when Ns >= 10000000 -> io_lib:format("~.1f ms", [Ns / 1000000]);
us1(Ns) -> io_lib:format("~.1f us", [Ns / 1000]).

max_or_undef(L) ->
    case [X || X <- L, X =/= undefined] of
        [] -> undefined;
        Xs -> lists:max(Xs)
    end.

%% ================================================================ 3: readline

line_phase() ->
    Lines = ?LINES_TOTAL div ?LINE_LEN,
    Data = lines(Lines),
    {ok, Buf} = py_buffer:new(),
    _ = [ok = py_buffer:write(Buf, P) || P <- pieces(Data)],
    ok = py_buffer:close(Buf),
    {ok, _} = py:call(buffer_bench, keep_bytes, [lines, Data]),
    Bytes = byte_size(Data),
    Cases = [{readline_pybuffer, Buf}, {readline_bytesio, lines},
             {iterate_pybuffer, Buf}, {iterate_bytesio, lines}],
    _ = [call_timed(F, [A], Lines, Bytes) || {F, A} <- Cases], %% warm-up
    Results = lists:append([[{F, call_timed(F, [A], Lines, Bytes)} || {F, A} <- order(R, Cases)]
                            || R <- lists:seq(1, ?LINE_ROUNDS)]),
    {ok, true} = py:call(buffer_bench, drop_bytes, [lines]),
    Ns = fun(F) -> [N || {G, N} <- Results, G =:= F] end,
    io:format("~n3. readline over ~.1f MiB of ~b-byte lines (~b lines, written in 64 KiB binaries, "
              "closed, then read), ~b rounds~n~n", [Bytes / ?MiB, ?LINE_LEN, Lines, ?LINE_ROUNDS]),
    io:format("~-36s ~12s ~12s ~14s ~10s~n", ["", "PyBuffer", "io.BytesIO", "ns/line",
                                               "ratio"]),
    R1 = line_row("readline() loop", Ns(readline_pybuffer), Ns(readline_bytesio), Lines),
    _ = line_row("for line in f", Ns(iterate_pybuffer), Ns(iterate_bytesio), Lines),
    io:format("~nMB/s of lines read, median of rounds; ratio = median over rounds of PyBuffer "
              "speed / BytesIO speed (1.0 = as fast).~n"),
    io:format("~ntargets, readline:~n"),
    target("readline: >= 0.8x io.BytesIO", met(R1 >= ?T_READLINE), "~.2fx", [R1]),
    ok.

line_row(Label, PyNs, IoNs, Lines) ->
    Bytes = Lines * ?LINE_LEN,
    Ratio = median([I / P || {P, I} <- lists:zip(PyNs, IoNs)]),
    io:format("~-36s ~7b MB/s ~7b MB/s ~14s ~9.2fx~n",
              [Label, round(Bytes * 1000 / median(PyNs)), round(Bytes * 1000 / median(IoNs)),
               io_lib:format("~b / ~b", [round(median(PyNs) / Lines), round(median(IoNs) / Lines)]),
               Ratio]),
    Ratio.

call_timed(F, Args, Lines, Bytes) ->
    {ok, {Lines, Bytes, Ns}} = py:call(buffer_bench, F, Args),
    Ns.

%% N lines of ?LINE_LEN bytes, a little like a log file, each one different.
lines(N) ->
    Filler = binary:copy(<<"abcdefghijklmnopqrstuvwxyz0123456789">>, 3),
    iolist_to_binary(
      [begin
           Id = integer_to_binary(1000000000 + I),
           Head = <<"2026-11-22T10:00:00Z INFO id=", Id/binary, " path=/api/v1/items/">>,
           Pad = ?LINE_LEN - 1 - byte_size(Head),
           <<Head/binary, (binary:part(Filler, I rem 20, Pad))/binary, "\n">>
       end || I <- lists:seq(1, N)]).

%% Fresh 64 KiB binaries (the last one shorter): lines straddle them.
pieces(<<P:?PIECE/binary, Rest/binary>>) -> [binary:copy(P) | pieces(Rest)];
pieces(<<>>) -> [];
pieces(Rest) -> [binary:copy(Rest)].

%% ================================================================ 4: find

find_phase(Tpl) ->
    io:format("~n4. find of a missing ~b-byte needle (~p) in ~b MiB written in 64 KiB binaries, "
              "~b rounds, the fastest of ~b searches per system per round~n~n",
              [byte_size(?NEEDLE), ?NEEDLE, ?TOTAL div ?MiB, ?FIND_ROUNDS, ?FIND_TRIES]),
    io:format("~-24s ~14s ~14s ~14s ~12s ~12s~n",
              ["data", "PyBuffer.find", "bytes.find", "memmem", "vs bytes", "vs memmem"]),
    Random = fun() -> [binary:copy(Tpl) || _ <- lists:seq(1, ?TOTAL div ?PIECE)] end,
    Text = fun() ->
                   Ps = pieces(lines(?LINES_TOTAL div ?LINE_LEN)),
                   lists:append(lists:duplicate(?TOTAL div (?LINES_TOTAL), Ps))
           end,
    R = find_set("random bytes", Random),
    T = find_set("text lines", Text),
    io:format("~nMB/s searched, median of rounds; vs = median over rounds of PyBuffer.find speed / "
              "the other's.  memmem = glibc memmem through ctypes on the bytes object.~n"),
    io:format("~ntargets, find:~n"),
    target("find: >= 0.9x memmem, random bytes", met(R >= ?T_FIND), "~.2fx", [R]),
    target("find: >= 0.9x memmem, text lines", met(T >= ?T_FIND), "~.2fx", [T]),
    ok.

%% Writes the data set into a buffer in a process of its own (so that it is
%% freed afterwards), snapshots the same bytes as one bytes object, times.
find_set(Label, Make) ->
    Parent = self(),
    {Pid, Mon} = spawn_opt(fun() -> Parent ! {self(), find_runs(Make)} end, [monitor]),
    {Py, By, Mm, Size} = receive
                             {Pid, Res} -> erlang:demonitor(Mon, [flush]), Res;
                             {'DOWN', Mon, process, Pid, Reason} -> error({find_failed, Reason})
                         end,
    Rate = fun(L) -> round(Size * 1000 / median(L)) end,
    VsB = median([B / P || {P, B} <- lists:zip(Py, By)]),
    VsM = median([M / P || {P, M} <- lists:zip(Py, Mm)]),
    io:format("~-24s ~9b MB/s ~9b MB/s ~9b MB/s ~11.2fx ~11.2fx~n",
              [Label, Rate(Py), Rate(By), Rate(Mm), VsB, VsM]),
    VsM.

find_runs(Make) ->
    {ok, Buf} = py_buffer:new(),
    _ = [ok = py_buffer:write(Buf, P) || P <- Make()],
    ok = py_buffer:close(Buf),
    erlang:garbage_collect(),
    {ok, Size} = py:call(buffer_bench, snapshot, [find_data, Buf]),
    Cases = [{find_pybuffer, [Buf, ?NEEDLE]}, {find_bytes, [find_data, ?NEEDLE]},
             {find_memmem, [find_data, ?NEEDLE]}],
    _ = [find_timed(F, A) || {F, A} <- Cases],
    Rs = lists:append([[{F, find_timed(F, A)} || {F, A} <- order(R, Cases)]
                       || R <- lists:seq(1, ?FIND_ROUNDS)]),
    {ok, true} = py:call(buffer_bench, drop_bytes, [find_data]),
    Get = fun(F) -> [N || {G, N} <- Rs, G =:= F] end,
    {Get(find_pybuffer), Get(find_bytes), Get(find_memmem), Size}.

%% The fastest of ?FIND_TRIES back-to-back searches: one search of 256 MiB
%% takes 15-60 ms, and single searches on a shared machine vary 2x from one
%% to the next (PyBuffer.find / memmem of single searches of 64 MiB ranged
%% 0.42-2.07 over 15 rounds).
find_timed(F, Args) ->
    lists:min([begin {ok, {-1, Ns}} = py:call(buffer_bench, F, Args), Ns end
               || _ <- lists:seq(1, ?FIND_TRIES)]).

%% ================================================================ helpers

median(L) ->
    S = lists:sort(L),
    lists:nth((length(S) + 1) div 2, S).

target(What, Met, Fmt, Args) ->
    io:format("  ~-46s ~-8s ~s~n", [What, Met, io_lib:format(Fmt, Args)]).

met(true) -> "met";
met(false) -> "NOT met".

us(undefined) -> "-";
us(Ns) -> io_lib:format("~b us", [round(Ns / 1000)]).

mib(undefined) -> "-";
mib(B) -> io_lib:format("~.1f MiB", [B / ?MiB]).

machine() ->
    Load = case file:read_file("/proc/loadavg") of
               {ok, B} -> hd(string:split(string:trim(B), " "));
               _ -> "?"
           end,
    io_lib:format("OTP ~s, ~b schedulers online, ~p logical CPUs, load average ~s",
                  [erlang:system_info(otp_release),
                   erlang:system_info(schedulers_online),
                   erlang:system_info(logical_processors_available), Load]).
