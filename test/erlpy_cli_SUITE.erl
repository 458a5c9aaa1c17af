%% bin/erlpy run as an OS process (a port program leads its own session):
%% serving, options, exit codes and messages, graceful stops by signal.
-module(erlpy_cli_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-compile([export_all, nowarn_export_all]).

all() ->
    [help_and_version, bad_usage, bad_app_name, app_import_fails, app_attribute_missing, port_in_use,
     serves_on_several_binds, sigterm_finishes_in_flight, sigint_finishes_in_flight,
     group_sigterm_counts_once, second_signal_stops_at_once, serves_asgi_app, asgi_startup_fails].

suite() -> [{timetrap, {minutes, 3}}].

init_per_testcase(Case, Config) ->
    Dir = filename:join(?config(priv_dir, Config), atom_to_list(Case)),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    %% The app: / answers, /slow waits for the file `go' (after creating
    %% `started'), /boom is a module failing at import.
    ok = file:write_file(filename:join(Dir, "cli_app.py"), <<"
import os, time
DIR = os.path.dirname(os.path.abspath(__file__))
def app(environ, start_response):
    if environ['PATH_INFO'] == '/slow':
        open(os.path.join(DIR, 'started'), 'w').close()
        while not os.path.exists(os.path.join(DIR, 'go')):
            time.sleep(0.02)
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'cli says hi']
">>),
    ok = file:write_file(filename:join(Dir, "broken_app.py"), <<"raise RuntimeError('boom at import')\n">>),
    %% An ASGI app, and one whose lifespan startup fails.
    ok = file:write_file(filename:join(Dir, "asgi_cli_app.py"), <<"
async def app(scope, receive, send):
    if scope['type'] == 'lifespan':
        await receive()
        await send({'type': 'lifespan.startup.complete'})
        await receive()
        await send({'type': 'lifespan.shutdown.complete'})
        return
    await send({'type': 'http.response.start', 'status': 200, 'headers': []})
    await send({'type': 'http.response.body', 'body': b'asgi says hi'})

async def failing(scope, receive, send):
    await receive()
    await send({'type': 'lifespan.startup.failed', 'message': 'no database'})
">>),
    [{dir, Dir} | Config].

end_per_testcase(_, Config) ->
    erlpy_test:kill_os_group(filename:join(?config(dir, Config), "os_pid")),
    Config.

%% ------------------------------------------------------------------ cases

help_and_version(Config) ->
    {0, Help} = run(Config, ["--help"]),
    ?assertMatch("usage: erlpy serve" ++ _, Help),
    [?assertNotEqual(nomatch, string:find(Help, Opt))
     || Opt <- ["--bind", "--contexts", "--max-body", "--timeout", "--keep-alive", "--graceful-timeout",
                "--python-path", "--access-log", "--log-level", "--version"]],
    {0, Version} = run(Config, ["--version"]),
    _ = application:load(erlpy),
    {ok, Vsn} = application:get_key(erlpy, vsn),
    ?assertEqual("erlpy " ++ Vsn ++ "\n", Version).

bad_usage(Config) ->
    {2, Out} = run(Config, ["serve", "cli_app:app", "--no-such-option"]),
    ?assertNotEqual(nomatch, string:find(Out, "unknown option --no-such-option")),
    {2, Out2} = run(Config, ["serve", "cli_app:app", "--contexts", "many"]),
    ?assertNotEqual(nomatch, string:find(Out2, "--contexts")),
    {2, Out3} = run(Config, ["serve", "cli_app:app", "--bind", "127.0.0.1:http"]),
    ?assertNotEqual(nomatch, string:find(Out3, "--bind")).

bad_app_name(Config) ->
    [begin
         {2, Out} = run(Config, ["serve", Bad]),
         ?assertNotEqual(nomatch, string:find(Out, "bad app name '" ++ Bad ++ "'"))
     end || Bad <- ["cli_app:", "cli-app:app", ":app", "cli_app:app:x", "1app"]].

app_import_fails(Config) ->
    {3, Out} = run(Config, ["serve", "broken_app:app", "--python-path", ?config(dir, Config)]),
    ?assertNotEqual(nomatch, string:find(Out, "cannot load app broken_app:app")),
    ?assertNotEqual(nomatch, string:find(Out, "RuntimeError: boom at import")),
    ?assertNotEqual(nomatch, string:find(Out, "Traceback")).

app_attribute_missing(Config) ->
    {3, Out} = run(Config, ["serve", "cli_app:nope", "--python-path", ?config(dir, Config)]),
    ?assertNotEqual(nomatch, string:find(Out, "AttributeError")).

port_in_use(Config) ->
    {ok, Taken} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    {ok, Port} = inet:port(Taken),
    Bind = "127.0.0.1:" ++ integer_to_list(Port),
    {4, Out} = run(Config, ["serve", "cli_app:app", "--python-path", ?config(dir, Config), "--bind", Bind]),
    ?assertNotEqual(nomatch, string:find(Out, "cannot listen on " ++ Bind ++ ": address already in use")),
    gen_tcp:close(Taken).

%% Two --bind: two listeners; --access-log - writes a line per request to
%% stdout; the current directory is on sys.path (the app is found there).
serves_on_several_binds(Config) ->
    {Server, [P1, P2]} = serve(Config, ["--bind", "127.0.0.1:0", "--bind", "localhost:0", "--access-log", "-"]),
    ?assertEqual("cli says hi", get(P1, "/")),
    ?assertEqual("cli says hi", get(P2, "/x")),
    signal(Server, "TERM"),
    {0, Out} = wait_exit(Server),
    ?assertNotEqual(nomatch, string:find(Out, "127.0.0.1 GET / 200")),
    ?assertNotEqual(nomatch, string:find(Out, "127.0.0.1 GET /x 200")).

sigterm_finishes_in_flight(Config) ->
    graceful(Config, fun(Server) -> signal(Server, "TERM") end).

sigint_finishes_in_flight(Config) ->
    graceful(Config, fun(Server) -> signal(Server, "INT") end).

%% A signal to the whole process group reaches the script and the node: it
%% counts once (a graceful stop), not twice (a stop at once).
group_sigterm_counts_once(Config) ->
    graceful(Config, fun(#{os_pid := Pid}) -> os:cmd("/bin/kill -TERM -- -" ++ integer_to_list(Pid)) end).

second_signal_stops_at_once(Config) ->
    {Server, [Port]} = serve(Config, []),
    Self = self(),
    spawn_link(fun() -> Self ! {slow, get(Port, "/slow")} end),
    erlpy_test:wait_until(fun() -> filelib:is_regular(filename:join(?config(dir, Config), "started")) end, 30000),
    signal(Server, "TERM"),
    erlpy_test:wait_until(fun() -> gen_tcp:connect({127, 0, 0, 1}, Port, []) =:= {error, econnrefused} end, 30000),
    signal(Server, "TERM"),
    ?assertMatch({1, _}, wait_exit(Server)),
    receive {slow, Out} -> ?assertEqual("", Out) after 30000 -> ct:fail(slow_lost) end.

%% An ASGI app (told apart from WSGI by itself), stopped by SIGTERM.
serves_asgi_app(Config) ->
    Server = start(Config, ["serve", "asgi_cli_app:app", "--bind", "127.0.0.1:0"]),
    [Port] = erlpy_test_cli:ports(Server, 1),
    ?assertEqual("asgi says hi", get(Port, "/")),
    signal(Server, "TERM"),
    ?assertMatch({0, _}, wait_exit(Server)),
    {2, Out} = run(Config, ["serve", "asgi_cli_app:app", "--interface", "cgi"]),
    ?assertNotEqual(nomatch, string:find(Out, "--interface: expected auto, wsgi or asgi")),
    ?assertEqual(nomatch, string:find(Out, "unknown option")).

asgi_startup_fails(Config) ->
    {3, Out} = run(Config, ["serve", "asgi_cli_app:failing", "--interface", "asgi", "--bind", "127.0.0.1:0"]),
    ?assertNotEqual(nomatch, string:find(Out, "app startup failed: no database")).

%% ------------------------------------------------------------------ helpers

%% A request in flight when the signal comes finishes; new connections are
%% refused meanwhile; the exit status is 0.
graceful(Config, Signal) ->
    {Server, [Port]} = serve(Config, []),
    Self = self(),
    spawn_link(fun() -> Self ! {slow, get(Port, "/slow")} end),
    Dir = ?config(dir, Config),
    erlpy_test:wait_until(fun() -> filelib:is_regular(filename:join(Dir, "started")) end, 30000),
    Signal(Server),
    erlpy_test:wait_until(fun() -> gen_tcp:connect({127, 0, 0, 1}, Port, []) =:= {error, econnrefused} end, 30000),
    ok = file:write_file(filename:join(Dir, "go"), <<>>),
    receive {slow, Out} -> ?assertEqual("cli says hi", Out) after 30000 -> ct:fail(slow_lost) end,
    {Status, Log} = wait_exit(Server),
    ?assertEqual(0, Status, Log).

%% Runs bin/erlpy to its end (in the test's directory: the app's home).
run(Config, Args) ->
    wait_exit(start(Config, Args)).

start(Config, Args) ->
    erlpy_test_cli:start(?config(dir, Config), Args).

%% Starts `serve cli_app:app'; returns once it listens, with its ports.
serve(Config, Args0) ->
    Args = case lists:member("--bind", Args0) of
               true -> Args0;
               false -> ["--bind", "127.0.0.1:0" | Args0]
           end,
    Server = start(Config, ["serve", "cli_app:app" | Args]),
    {Server, erlpy_test_cli:ports(Server, length([x || "--bind" <- Args]))}.

signal(Server, Sig) ->
    erlpy_test_cli:signal(Server, Sig).

wait_exit(Server) ->
    erlpy_test_cli:wait_exit(Server).

get(Port, Path) ->
    erlpy_test:curl_get(Port, Path).
