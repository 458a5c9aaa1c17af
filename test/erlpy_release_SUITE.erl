%% Releases serve WSGI: a rebar3 (relx) release and a Mix release of a
%% project depending on erlpy are built in a temporary directory, started
%% as OS processes (each in its own session), serve requests, and stop
%% gracefully on SIGTERM with a request in flight.  The projects are in
%% erlpy_release_SUITE_data/.  Offline: no package registry is reached.
-module(erlpy_release_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-compile([export_all, nowarn_export_all]).

all() -> [rebar3_release, mix_release].

init_per_testcase(Case, Config) ->
    [{case_name, Case} | Config].

suite() -> [{timetrap, {minutes, 10}}].

end_per_testcase(_, Config) ->
    %% Whatever is left of a release started here goes, by process group
    %% (a port program leads its own session and group).
    erlpy_test:kill_os_group(filename:join(?config(priv_dir, Config), "os_pid")),
    Config.

%% ------------------------------------------------------------------ rebar3

rebar3_release(Config) ->
    Dir = project(Config, "relapp"),
    ok = file:make_dir(filename:join(Dir, "_checkouts")),
    ok = file:make_symlink(root(), filename:join([Dir, "_checkouts", "erlpy"])),
    sh("rebar3 release", Dir, []),
    Rel = filename:join([Dir, "_build", "default", "rel", "relapp"]),
    release_contents(Rel),
    Run = run_dir(Config),
    Port = start(Config, filename:join([Rel, "bin", "relapp"]), ["foreground"], [{"RELAPP_DIR", Run}]),
    ?assertEqual("served by a release", get(Port, "/")),
    sigterm_with_request_in_flight(Port, Run, "served by a release"),
    release_command_line(Config, Rel).

%% bin/erlpy, copied into the release by a relx overlay, runs from the
%% release's own erts and libraries.
release_command_line(Config, Rel) ->
    [Priv] = filelib:wildcard(filename:join([Rel, "lib", "relapp-*", "priv"])),
    Port = open_port({spawn_executable, filename:join([Rel, "bin", "erlpy"])},
                     [{args, ["serve", "relapp_wsgi:app", "--python-path", Priv, "--bind", "127.0.0.1:0"]},
                      exit_status, stderr_to_stdout, binary]),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    put(os_pid, OsPid),
    put(release, Port),
    ok = file:write_file(filename:join(?config(priv_dir, Config), "os_pid"), integer_to_list(OsPid)),
    Listening = fun Wait(Acc) ->
                        case re:run(Acc, "listening at http://127.0.0.1:([0-9]+)/", [{capture, all_but_first, list}]) of
                            {match, [P]} -> list_to_integer(P);
                            nomatch ->
                                receive {Port, {data, D}} -> Wait(<<Acc/binary, D/binary>>)
                                after 60000 -> ct:fail("bin/erlpy in the release: ~s", [Acc])
                                end
                        end
                end,
    HttpPort = Listening(<<>>),
    ?assertEqual("served by a release", get(HttpPort, "/")),
    os:cmd("kill -TERM " ++ integer_to_list(OsPid)),
    ?assertEqual(0, wait_exit()).

%% What erlpy needs at run time is in the release (the NIF, every Python
%% source), and no test file is.
release_contents(Rel) ->
    [App] = filelib:wildcard(filename:join([Rel, "lib", "erlpy-*"])),
    ?assert(filelib:is_regular(filename:join([App, "priv", "erlpy_nif.so"]))),
    Sources = [filename:basename(F) || F <- filelib:wildcard(filename:join([root(), "python", "*.py*"]))],
    ?assertNotEqual([], Sources),
    [?assert(filelib:is_regular(filename:join([App, "priv", "python", S]))) || S <- Sources],
    Files = filelib:wildcard("**", App),
    ?assertEqual([], [F || F <- Files, string:find(F, "SUITE") =/= nomatch
                                orelse string:find(F, "test") =/= nomatch]).

%% ------------------------------------------------------------------ mix

%% An Elixir project with erlpy as a path dependency built by rebar3 (Mix
%% is told where rebar3 is, so it fetches nothing): its application makes
%% one call at start and serves one app; released with `mix release'.
mix_release(Config) ->
    Dir = project(Config, "elixapp"),
    MixHome = filename:join(?config(priv_dir, Config), "mix_home"),
    ok = file:make_dir(MixHome),
    Env = [{"MIX_HOME", MixHome}, {"MIX_ENV", "prod"}, {"HEX_OFFLINE", "1"},
           {"MIX_REBAR3", os:find_executable("rebar3")}, {"ERLPY_SRC", root()}],
    sh("mix release --overwrite", Dir, Env),
    Run = run_dir(Config),
    Bin = filename:join([Dir, "_build", "prod", "rel", "elixapp", "bin", "elixapp"]),
    Port = start(Config, Bin, ["start"], [{"ELIXAPP_DIR", Run}, {"RELEASE_DISTRIBUTION", "none"}]),
    ?assertEqual({ok, <<"3">>}, file:read_file(filename:join(Run, "call"))),
    ?assertEqual("served by a mix release", get(Port, "/")),
    os:cmd("kill -TERM " ++ integer_to_list(get(os_pid))),
    ?assertEqual(0, wait_exit()).

%% ------------------------------------------------------------------ helpers

%% SIGTERM while a request is in flight: new connections are refused at
%% once, the request finishes, the node exits with status 0.
sigterm_with_request_in_flight(Port, Run, Body) ->
    Self = self(),
    spawn_link(fun() -> Self ! {slow, get(Port, "/slow")} end),
    erlpy_test:wait_until(fun() -> filelib:is_regular(filename:join(Run, "started")) end, 60000),
    os:cmd("kill -TERM " ++ integer_to_list(get(os_pid))),
    erlpy_test:wait_until(fun() -> gen_tcp:connect({127, 0, 0, 1}, Port, []) =:= {error, econnrefused} end,
                          60000),
    ok = file:write_file(filename:join(Run, "go"), <<>>),
    receive {slow, Out} -> ?assertEqual(Body, Out) after 60000 -> ct:fail(slow_lost) end,
    ?assertEqual(0, wait_exit()).

root() ->
    Src = proplists:get_value(source, ?MODULE:module_info(compile)),
    filename:dirname(filename:dirname(Src)).

%% A copy of a project from the data directory (found from the source: a
%% run of the suites compiled elsewhere, as make test-asan does, has no
%% data directory beside the compiled suite).
project(Config, Name) ->
    Dir = filename:join(?config(priv_dir, Config), Name),
    Data = filename:join([root(), "test", "erlpy_release_SUITE_data", Name]),
    sh("cp -R " ++ Data ++ " " ++ Dir, ".", []),
    Dir.

%% Where a release and the test exchange files: one per test case (the
%% priv_dir is the suite's).
run_dir(Config) ->
    Run = filename:join(?config(priv_dir, Config), "run_" ++ atom_to_list(?config(case_name, Config))),
    ok = filelib:ensure_dir(filename:join(Run, "x")),
    Run.

%% Runs a shell command; its output is in the test log, a failure fails.
sh(Cmd, Dir, Env) ->
    Port = open_port({spawn_executable, "/bin/sh"},
                     [{args, ["-c", Cmd]}, {cd, Dir}, {env, Env}, exit_status, stderr_to_stdout, binary]),
    {Status, Out} = collect(Port, []),
    ct:log("$ ~s~n~s", [Cmd, Out]),
    Status =:= 0 orelse ct:fail("~s: exit status ~b", [Cmd, Status]).

collect(Port, Acc) ->
    receive
        {Port, {data, D}} -> collect(Port, [Acc, D]);
        {Port, {exit_status, S}} -> {S, Acc}
    after 300000 -> ct:fail({timeout, Acc})
    end.

%% Starts a release (a port program runs in a session of its own, whose
%% leader it is; the start scripts exec the VM); returns the port it serves
%% on, once it has written it.
start(Config, Bin, Args, Env) ->
    Run = run_dir(Config),
    Port = open_port({spawn_executable, Bin},
                     [{args, Args}, {env, Env}, exit_status, stderr_to_stdout, binary]),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    put(os_pid, OsPid),
    ok = file:write_file(filename:join(?config(priv_dir, Config), "os_pid"), integer_to_list(OsPid)),
    put(release, Port),
    PortFile = filename:join(Run, "port"),
    %% Written, not merely created.
    Written = fun() -> case file:read_file(PortFile) of {ok, <<_, _/binary>>} -> true; _ -> false end end,
    erlpy_test:wait_until(fun() -> Written() orelse exited() end, 120000),
    case Written() of
        true -> {ok, N} = file:read_file(PortFile), binary_to_integer(N);
        false -> ct:fail("the release did not start: ~s", [element(2, collect(Port, []))])
    end.

exited() ->
    Port = get(release),
    receive {Port, {exit_status, _}} = M -> self() ! M, true after 0 -> false end.

wait_exit() ->
    {Status, Out} = collect(get(release), []),
    ct:log("release output:~n~s", [Out]),
    erase(os_pid),
    Status.

get(Port, Path) ->
    erlpy_test:curl_get(Port, Path).
