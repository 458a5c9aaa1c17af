%% Helpers shared by the Common Test suites.
-module(erlpy_test).
-export([start/1, stop/1, wait_until/1, wait_until/2, python_dir/0, rss/0]).

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
