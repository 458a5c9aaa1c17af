%% Servers under supervision: in a user's tree (child_spec/1), under erlpy's
%% (start/1), supervised acceptors, and graceful stops when the application
%% stops: in-flight requests finish, new connections are refused, idle
%% keep-alive connections close.
-module(erlpy_http_lifecycle_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-compile([export_all, nowarn_export_all]).
-behaviour(supervisor).

all() ->
    [child_spec_in_user_tree, started_under_erlpy_sup, port_in_use, acceptors_restarted,
     app_stop_finishes_in_flight, graceful_timeout_bounds_stop, stop_with_bound, start_link_then_stop].

init_per_testcase(_, Config) ->
    Config2 = erlpy_test:start(Config),
    %% No gate yet: /slow makes it as it starts (see in_app/0).
    {ok, _} = py:eval(<<"__import__('http_apps')._gates.pop('slow', None)">>),
    Config2.

%% A request cut by a stop leaves its app waiting on the gate in a worker:
%% release it.
end_per_testcase(_, Config) ->
    {ok, _} = application:ensure_all_started(erlpy),
    {ok, _} = py:eval(<<"__import__('http_apps').gate('slow').set()">>),
    ok = application:stop(erlpy),
    Config.

%% The supervisor callback for a user's tree.
init(Children) ->
    {ok, {#{strategy => one_for_one}, Children}}.

child_spec_in_user_tree(_) ->
    Spec = erlpy_http:child_spec(#{app => <<"http_apps:app">>, port => 0, name => user_server}),
    {ok, Sup} = supervisor:start_link(?MODULE, [Spec]),
    Port = erlpy_http:port(user_server),
    ?assertEqual("Hello, World!", get(Port, "/hello")),
    [{Id, Server, supervisor, _}] = supervisor:which_children(Sup),
    ?assertEqual(Server, whereis(user_server)),
    %% Not under erlpy's supervisor.
    ?assertEqual([], supervisor:which_children(erlpy_http_sup)),
    ok = supervisor:terminate_child(Sup, Id),
    ?assertEqual({error, econnrefused}, gen_tcp:connect({127, 0, 0, 1}, Port, [])),
    unlink(Sup),
    exit(Sup, shutdown).

started_under_erlpy_sup(_) ->
    {ok, Server} = erlpy_http:start(#{app => <<"http_apps:app">>, port => 0}),
    ?assertMatch([{_, Server, supervisor, _}], supervisor:which_children(erlpy_http_sup)),
    ?assertEqual("Hello, World!", get(erlpy_http:port(Server), "/hello")),
    ok = erlpy_http:stop(Server),
    ?assertEqual([], supervisor:which_children(erlpy_http_sup)).

port_in_use(_) ->
    {ok, Server} = erlpy_http:start(#{app => <<"http_apps:app">>, port => 0}),
    Port = erlpy_http:port(Server),
    ?assertEqual({error, eaddrinuse}, erlpy_http:start(#{app => <<"http_apps:app">>, port => Port})),
    ok = erlpy_http:stop(Server).

%% A crashed acceptor is restarted: the server keeps serving.
acceptors_restarted(_) ->
    {ok, Server} = erlpy_http:start(#{app => <<"http_apps:app">>, port => 0, acceptors => 2}),
    Acceptors = acceptors(Server),
    ?assertEqual(2, length(Acceptors)),
    [exit(A, kill) || A <- Acceptors],
    erlpy_test:wait_until(fun() ->
                                  New = acceptors(Server),
                                  length(New) =:= 2 andalso New -- Acceptors =:= New
                          end),
    ?assertEqual("Hello, World!", get(erlpy_http:port(Server), "/hello")),
    ok = erlpy_http:stop(Server).

%% application:stop (what init:stop/0 and SIGTERM do) stops the servers
%% gracefully: the listening socket closes at once, an idle keep-alive
%% connection is closed, the request in flight finishes.
app_stop_finishes_in_flight(_) ->
    {ok, Server} = erlpy_http:start(#{app => <<"http_apps:app">>, port => 0}),
    Port = erlpy_http:port(Server),
    Self = self(),
    spawn_link(fun() -> Self ! {slow, get(Port, "/slow")} end),
    {ok, Idle} = gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {active, false}]),
    erlpy_test:wait_until(fun() -> erlpy_http:connections(Server) =:= 2 end),
    in_app(),
    spawn_link(fun() -> Self ! {stopped, application:stop(erlpy)} end),
    ?assertEqual({error, closed}, gen_tcp:recv(Idle, 0, 10000)),
    erlpy_test:wait_until(fun() -> gen_tcp:connect({127, 0, 0, 1}, Port, []) =:= {error, econnrefused} end),
    %% Still stopping: waiting for the request in flight.
    receive {stopped, _} -> ct:fail(stopped_before_the_request_finished) after 0 -> ok end,
    {ok, true} = py:eval(<<"__import__('http_apps').gate('slow').set() or True">>),
    receive {slow, Out} -> ?assertEqual("slow", Out) after 20000 -> ct:fail(slow_lost) end,
    receive {stopped, ok} -> ok after 20000 -> ct:fail(not_stopped) end.

%% A request still running after graceful_timeout is cut, and the stop ends.
graceful_timeout_bounds_stop(_) ->
    {ok, Server} = erlpy_http:start(#{app => <<"http_apps:app">>, port => 0, graceful_timeout => 200}),
    Port = erlpy_http:port(Server),
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {active, false}]),
    ok = gen_tcp:send(S, <<"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n">>),
    in_app(),
    ok = application:stop(erlpy),
    ?assertEqual({error, closed}, gen_tcp:recv(S, 0, 10000)).

%% stop/2's bound overrides the server's.
stop_with_bound(_) ->
    {ok, Server} = erlpy_http:start(#{app => <<"http_apps:app">>, port => 0, graceful_timeout => infinity}),
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, erlpy_http:port(Server), [binary, {active, false}]),
    ok = gen_tcp:send(S, <<"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n">>),
    in_app(),
    ok = erlpy_http:stop(Server, 200),
    ?assertEqual({error, closed}, gen_tcp:recv(S, 0, 10000)),
    ?assertNot(is_process_alive(Server)).

%% A server from start_link/1 is the caller's, not under erlpy_sup; stop/1
%% stops it all the same, and the caller (linked) lives on.
start_link_then_stop(_) ->
    {ok, Server} = erlpy_http:start_link(#{app => <<"http_apps:app">>, port => 0}),
    ?assertEqual([], supervisor:which_children(erlpy_http_sup)),
    Port = erlpy_http:port(Server),
    ?assertEqual("Hello, World!", get(Port, "/hello")),
    ok = erlpy_http:stop(Server),
    ?assertNot(is_process_alive(Server)),
    ?assertEqual({error, econnrefused}, gen_tcp:connect({127, 0, 0, 1}, Port, [])).

%% ------------------------------------------------------------------ helpers

%% The /slow request is in the app (not still on its way, when a stop
%% would close its connection as idle).
in_app() ->
    erlpy_test:wait_until(fun() -> py:eval(<<"'slow' in __import__('http_apps')._gates">>) =:= {ok, true} end).

acceptors(Server) ->
    [AccSup] = [P || {acceptors, P, _, _} <- supervisor:which_children(Server)],
    [P || {_, P, _, _} <- supervisor:which_children(AccSup), is_pid(P)].

get(Port, Path) ->
    os:cmd("curl -s --max-time 60 http://127.0.0.1:" ++ integer_to_list(Port) ++ Path).
