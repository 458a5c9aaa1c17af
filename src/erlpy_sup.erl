%% @doc The erlpy top supervisor.
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
    {ok, {#{strategy => one_for_one, intensity => 5, period => 10}, [Reaper, PythonLog]}}.
