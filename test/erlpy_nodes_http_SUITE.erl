%% bin/erlpy serve --workers N: requests spread over worker nodes (each an
%% OS process listening on the same port), a killed worker node replaced
%% without losing the requests it never got, SIGTERM stopping every node
%% gracefully, --max-requests recycling nodes.
-module(erlpy_nodes_http_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-compile([export_all, nowarn_export_all]).

all() ->
    [help_lists_the_options, both_worker_nodes_answer, killed_worker_node_is_replaced, sigterm_stops_every_node_gracefully,
     max_requests_recycles_worker_nodes, erlpy_http_start_with_worker_nodes,
     asgi_app_on_worker_nodes, asgi_startup_failure_on_worker_nodes].

suite() -> [{timetrap, {minutes, 4}}].

init_per_testcase(Case, Config) ->
    Dir = filename:join(?config(priv_dir, Config), atom_to_list(Case)),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    %% / answers with the worker node's OS pid; /slow waits for the file
    %% `go' (after creating `started').
    ok = file:write_file(filename:join(Dir, "nodes_app.py"), <<"
import os, time
DIR = os.path.dirname(os.path.abspath(__file__))
def app(environ, start_response):
    if environ['PATH_INFO'] == '/slow':
        open(os.path.join(DIR, 'started'), 'w').close()
        while not os.path.exists(os.path.join(DIR, 'go')):
            time.sleep(0.02)
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [str(os.getpid()).encode()]
async def asgi_app(scope, receive, send):
    assert scope['type'] == 'http'
    await send({'type': 'http.response.start', 'status': 200, 'headers': []})
    await send({'type': 'http.response.body', 'body': str(os.getpid()).encode()})
async def failing_startup(scope, receive, send):
    if scope['type'] == 'lifespan':
        await receive()
        await send({'type': 'lifespan.startup.failed', 'message': 'no database'})
">>),
    [{dir, Dir} | Config].

end_per_testcase(_, Config) ->
    erlpy_test:kill_os_group(filename:join(?config(dir, Config), "os_pid")),
    Config.

%% ------------------------------------------------------------------ cases

%% An ASGI app (told apart as with one node) runs its event loops on each
%% worker node.
asgi_app_on_worker_nodes(Config) ->
    {Server, Port} = serve(Config, "nodes_app:asgi_app", ["--workers", "2"]),
    ?assertEqual(2, length(pids_seen(Port, 2, []))),
    signal(Server, "TERM"),
    {0, _} = wait_exit(Server).

%% A failed lifespan startup on a worker node fails the start, with the
%% app's message and the same exit status as on one node.
asgi_startup_failure_on_worker_nodes(Config) ->
    Server = start(Config, ["serve", "nodes_app:failing_startup", "--bind", "127.0.0.1:0", "--workers", "2"]),
    {3, Out} = wait_exit(Server),
    ?assertNotEqual(nomatch, string:find(Out, "app startup failed: no database")).

help_lists_the_options(Config) ->
    Port = open_port({spawn_executable, erlpy_test_cli:erlpy()}, [{args, ["--help"]}, {cd, ?config(dir, Config)},
                                                   exit_status, stderr_to_stdout, binary]),
    {0, Help} = wait_exit(#{port => Port}),
    [?assertNotEqual(nomatch, string:find(Help, Opt)) || Opt <- ["--workers N", "--max-requests N"]].

%% --access-log - : the worker nodes' lines reach this node's stdout.
both_worker_nodes_answer(Config) ->
    {Server, Port} = serve(Config, ["--workers", "2", "--access-log", "-"]),
    Pids = pids_seen(Port, 2, []),
    ?assertEqual(2, length(Pids)),
    ?assertEqual(Pids, lists:sort(pids_seen(Port, 2, []))),
    signal(Server, "TERM"),
    {0, Out} = wait_exit(Server),
    ?assertNotEqual(nomatch, string:find(Out, "127.0.0.1 GET / 200")).

%% A worker node killed with SIGKILL: the requests sent after it died all
%% get answers (from the other node, then from its replacement too).
killed_worker_node_is_replaced(Config) ->
    {Server, Port} = serve(Config, ["--workers", "2"]),
    [Victim, Other] = pids_seen(Port, 2, []),
    _ = os:cmd("kill -KILL " ++ Victim),
    erlpy_test:wait_until(fun() -> not filelib:is_dir("/proc/" ++ Victim) end, 30000),
    Answers = [get(Port, "/") || _ <- lists:seq(1, 40)],
    ?assertEqual([], [A || A <- Answers, A =/= Other, not is_new_pid(A, [Victim, Other])]),
    %% The replacement answers too.
    [New] = pids_seen(Port, 1, [Victim, Other]),
    ?assertNotEqual(Victim, New),
    signal(Server, "TERM"),
    {0, _} = wait_exit(Server).

%% A request in flight on a worker node when SIGTERM comes finishes; new
%% connections are refused meanwhile (by every node); the exit status is 0
%% and no worker node is left.
sigterm_stops_every_node_gracefully(Config) ->
    {Server, Port} = serve(Config, ["--workers", "2"]),
    Pids = pids_seen(Port, 2, []),
    Self = self(),
    spawn_link(fun() -> Self ! {slow, get(Port, "/slow")} end),
    Dir = ?config(dir, Config),
    erlpy_test:wait_until(fun() -> filelib:is_regular(filename:join(Dir, "started")) end, 30000),
    signal(Server, "TERM"),
    erlpy_test:wait_until(fun() -> gen_tcp:connect({127, 0, 0, 1}, Port, []) =:= {error, econnrefused} end, 30000),
    ok = file:write_file(filename:join(Dir, "go"), <<>>),
    receive {slow, Out} -> ?assert(lists:member(Out, Pids)) after 30000 -> ct:fail(slow_lost) end,
    {Status, Log} = wait_exit(Server),
    ?assertEqual(0, Status, Log),
    erlpy_test:wait_until(fun() -> not lists:any(fun(P) -> filelib:is_dir("/proc/" ++ P) end, Pids) end, 30000).

max_requests_recycles_worker_nodes(Config) ->
    {Server, Port} = serve(Config, ["--workers", "2", "--max-requests", "10"]),
    Answers = [get(Port, "/") || _ <- lists:seq(1, 80)],
    Pids = lists:usort(Answers),
    ct:log("~p answers from ~p", [length(Answers), Pids]),
    ?assert(lists:all(fun(P) -> P =/= "" andalso lists:all(fun(C) -> C >= $0 andalso C =< $9 end, P) end,
                      Answers)),
    ?assert(length(Pids) > 2),
    signal(Server, "TERM"),
    {0, _} = wait_exit(Server).

%% The Erlang API: erlpy_http:start(#{worker_nodes => 2}); port/1,
%% connections/1 and stop/1 work on it; stop leaves no worker node.
erlpy_http_start_with_worker_nodes(Config) ->
    _ = application:load(erlpy),
    ok = application:set_env(erlpy, contexts, 2),
    erlpy_test:start(Config),
    App = <<"nodes_app:app">>,
    %% Worker nodes need distribution.
    {error, not_distributed} = erlpy_http:start(#{app => App, port => 0, worker_nodes => 2}),
    Name = list_to_atom("ct_nodes_http_" ++ os:getpid()),
    {ok, _} = net_kernel:start([Name, shortnames]),
    try
        ok = application:set_env(erlpy, python_path, [?config(dir, Config)]),
        {ok, S} = erlpy_http:start(#{app => App, port => 0, worker_nodes => 2}),
        Port = erlpy_http:port(S),
        Pids = pids_seen(Port, 2, []),
        0 = erlpy_http:connections(S),
        ok = erlpy_http:stop(S),
        {error, econnrefused} = gen_tcp:connect({127, 0, 0, 1}, Port, []),
        erlpy_test:wait_until(fun() -> not lists:any(fun(P) -> filelib:is_dir("/proc/" ++ P) end, Pids) end, 30000),
        {error, eaddrinuse} = erlpy_http:start(#{app => App, port => taken_port(), worker_nodes => 2})
    after
        erlpy_test:stop(Config),
        ok = application:set_env(erlpy, contexts, 8),
        ok = application:set_env(erlpy, python_path, []),
        net_kernel:stop()
    end.

taken_port() ->
    {ok, Taken} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    {ok, Port} = inet:port(Taken),
    Port.

%% ------------------------------------------------------------------ helpers

is_new_pid(A, Old) ->
    A =/= "" andalso not lists:member(A, Old) andalso lists:all(fun(C) -> C >= $0 andalso C =< $9 end, A).

%% Requests (a new connection each) until N pids not in Exclude answered.
pids_seen(Port, N, Exclude) ->
    Deadline = erlang:monotonic_time(millisecond) + 60000,
    pids_seen(Port, N, Exclude, [], Deadline).

pids_seen(Port, N, Exclude, Seen, Deadline) ->
    case length(Seen) >= N of
        true -> lists:sort(Seen);
        false ->
            erlang:monotonic_time(millisecond) < Deadline orelse ct:fail({pids_seen, Seen}),
            A = get(Port, "/"),
            case is_new_pid(A, Exclude ++ Seen) of
                true -> pids_seen(Port, N, Exclude, [A | Seen], Deadline);
                false -> pids_seen(Port, N, Exclude, Seen, Deadline)
            end
    end.

start(Config, Args) ->
    erlpy_test_cli:start(?config(dir, Config), Args).

serve(Config, Args) ->
    serve(Config, "nodes_app:app", Args).

serve(Config, App, Args) ->
    Server = start(Config, ["serve", App, "--bind", "127.0.0.1:0" | Args]),
    [Port] = erlpy_test_cli:ports(Server, 1),
    {Server, Port}.

signal(Server, Sig) ->
    erlpy_test_cli:signal(Server, Sig).

wait_exit(Server) ->
    erlpy_test_cli:wait_exit(Server).

get(Port, Path) ->
    erlpy_test:curl_get(Port, Path).
