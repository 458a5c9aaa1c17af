%% @doc The erlpy top supervisor: over `erlpy_http_sup', which holds the
%% HTTP servers started with `erlpy_http:start/1'.
-module(erlpy_sup).
-behaviour(supervisor).

-export([start_link/0, init/1]).

%% @doc Starts the supervisor, registered as `erlpy_sup'.
-spec start_link() -> {ok, pid()} | ignore | {error, term()}.
start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

%% @private
-spec init([]) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init([]) ->
    Reaper = #{id => py_wsgi_reaper, start => {py_wsgi, start_link, []}},
    PythonLog = #{id => erlpy_python_log, start => {erlpy_python_log, start_link, []}},
    Asgi = #{id => py_asgi, start => {py_asgi, start_link, []}, shutdown => 15000},
    Http = #{id => erlpy_http_sup, start => {erlpy_http_sup, start_link, []},
             type => supervisor, shutdown => infinity},
    %% Calls from front nodes, when this node serves as a worker node.
    CallServer = #{id => py_nodes_server, start => {py_nodes_server, start_link, []}},
    %% Worker nodes (docs/nodes.md): started before the servers, stopped after.
    Nodes = #{id => py_nodes, shutdown => 60000,
              start => {py_nodes, start_link,
                        [#{name => py_nodes, count => application:get_env(erlpy, worker_nodes, 0)}]}},
    {ok, {#{strategy => one_for_one, intensity => 5, period => 10}, [Reaper, PythonLog, CallServer, Nodes, Asgi, Http]}}.
