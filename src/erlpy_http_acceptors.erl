%% @private
%% @doc A server's acceptors, `acceptors' of them, each an
%% `erlpy_http_acceptor' accepting on the shared listening socket.
-module(erlpy_http_acceptors).
-behaviour(supervisor).

-export([start_link/1, init/1]).

%% @doc Starts the supervisor and its acceptors.
-spec start_link(map()) -> {ok, pid()} | ignore | {error, term()}.
start_link(Conf) ->
    supervisor:start_link(?MODULE, Conf).

%% @private
-spec init(map()) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init(#{acceptors := N} = Conf) ->
    Acceptors = [#{id => {acceptor, I}, start => {erlpy_http_acceptor, start_link, [Conf]},
                   restart => transient, shutdown => brutal_kill}
                 || I <- lists:seq(1, N)],
    {ok, {#{strategy => one_for_one, intensity => 10, period => 10}, Acceptors}}.
