%% Helpers shared by the Common Test suites.
-module(erlpy_test).
-export([start/1, stop/1, wait_until/1, wait_until/2, python_dir/0, rss/0,
         need_python_module/2, python_version/0, sanitized/0,
         kill_os_group/1, curl_get/2, gib_file/1]).

%% Starts erlpy with test/python on sys.path.
start(Config) ->
    _ = application:load(erlpy),
    Examples = filename:join(filename:dirname(filename:dirname(python_dir())), "examples"),
    ok = application:set_env(erlpy, python_path, [python_dir(), Examples]),
    {ok, _} = application:ensure_all_started(erlpy),
    Config.

stop(_Config) ->
    ok = application:stop(erlpy).

python_dir() ->
    Src = proplists:get_value(source, ?MODULE:module_info(compile)),
    filename:join(filename:dirname(Src), "python").

wait_until(F) ->
    wait_until(F, 5000).

wait_until(F, Timeout) when Timeout =< 0 ->
    F() orelse error(wait_until_timed_out);
wait_until(F, Timeout) ->
    case F() of
        true -> ok;
        false -> timer:sleep(10), wait_until(F, Timeout - 10)
    end.

%% Resident set size of this OS process, in bytes.
rss() ->
    {ok, Status} = file:read_file("/proc/self/status"),
    [_, Rest] = binary:split(Status, <<"VmRSS:">>),
    [Kb | _] = string:lexemes(Rest, " \t\n"),
    binary_to_integer(Kb) * 1024.

%% Config when the embedded Python imports Module, else {skip, Reason} naming
%% the module and the Python: for init_per_testcase of a test that needs a
%% package some Pythons lack (Flask, hypothesis).
need_python_module(Module, Config) ->
    case py:call(importlib, import_module, [Module]) of
        {ok, _} ->
            Config;
        {error, {python, <<"ModuleNotFoundError">>, _, _}} ->
            {skip, lists:flatten(io_lib:format("~s not importable on Python ~s",
                                               [Module, python_version()]))};
        Other ->
            %% Present but broken is a failure, not a skip.
            ct:fail({cannot_import, Module, Other})
    end.

%% "3.13.0": the embedded Python's version.
python_version() ->
    {ok, V} = py:eval(<<"'.'.join(map(str, __import__('sys').version_info[:3]))">>),
    binary_to_list(V).

%% Whether this VM runs the sanitizer build of the NIF (scripts/test-asan).
sanitized() ->
    os:getenv("ERLPY_SANITIZER") =/= false.

%% Kills what is left of an OS process group whose leader's pid a test wrote
%% to File (a port program leads its own session and group).
kill_os_group(File) ->
    case file:read_file(File) of
        {ok, Pid} -> os:cmd("/bin/kill -KILL -- -" ++ binary_to_list(Pid) ++ " 2>/dev/null"), ok;
        {error, _} -> ok
    end.

%% The body of GET http://127.0.0.1:Port/Path, by curl ("" when it fails).
curl_get(Port, Path) ->
    os:cmd("curl -s --max-time 60 http://127.0.0.1:" ++ integer_to_list(Port) ++ Path).

%% A 1 GiB file of pseudo-random data in Dir and its sha256 (hex), made
%% once per run; suites delete Dir/gib.bin at their end (the disk is shared).
gib_file(Dir) ->
    File = filename:join(Dir, "gib.bin"),
    case filelib:is_file(File) of
        true -> ok;
        false ->
            Block = crypto:strong_rand_bytes(1 bsl 20),
            {ok, F} = file:open(File, [write, raw, binary]),
            Ctx = lists:foldl(fun(I, C) ->
                                      B = binary:part(<<I:32, Block/binary>>, 0, 1 bsl 20),
                                      ok = file:write(F, B),
                                      crypto:hash_update(C, B)
                              end, crypto:hash_init(sha256), lists:seq(1, 1024)),
            ok = file:close(F),
            ok = file:write_file(File ++ ".sha256", string:lowercase(binary:encode_hex(crypto:hash_final(Ctx))))
    end,
    {ok, Hex} = file:read_file(File ++ ".sha256"),
    {File, binary_to_list(Hex)}.
