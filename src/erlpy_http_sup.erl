%% @private
%% @doc The supervisor of the servers started with `erlpy_http:start/1':
%% one `erlpy_http_server' child each, started on demand.  Stopping the
%% application stops them all at once (in parallel), each gracefully.
-module(erlpy_http_sup).
-behaviour(supervisor).

-export([start_link/0, init/1]).

%% @doc Starts the supervisor, registered as `erlpy_http_sup'.
-spec start_link() -> {ok, pid()} | ignore | {error, term()}.
start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

%% @private
-spec init([]) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init([]) ->
    %% temporary: a server that gave up (its children kept crashing) is not
    %% restarted, which could fail again (port taken) and take the others down.
    Server = #{id => erlpy_http_server,
               start => {erlpy_http_server, start_link, []},
               restart => temporary, type => supervisor, shutdown => infinity},
    {ok, {#{strategy => simple_one_for_one, intensity => 5, period => 10}, [Server]}}.
