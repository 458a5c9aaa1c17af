%% @private
%% @doc One HTTP server: a supervisor (rest_for_one) over its listener
%% (`erlpy_http_listener', which answers `port/1' and `connections/1' and
%% stops the connections gracefully) and its acceptors' supervisor
%% (`erlpy_http_acceptors').  This supervisor owns the listening socket and
%% the connection registry, so both outlive restarts of its children.
%%
%% Stopping it terminates the acceptors first, then the listener, which
%% closes the listening socket at once and waits (up to `graceful_timeout')
%% for the requests in flight.
-module(erlpy_http_server).
-behaviour(supervisor).

-export([start_link/1, listener/1, init/1]).

%% @doc Opens the listening socket in the caller (so that a port in use is a
%% plain `{error, eaddrinuse}'), then starts the supervisor and hands it the
%% socket.
-spec start_link(map()) -> {ok, pid()} | {error, term()}.
start_link(#{worker_nodes := N} = Config) when N > 0 ->
    erlpy_nodes_http:start_link(Config);
start_link(Config0) ->
    %% The app's interface, and for ASGI its lifespan startup, before the
    %% server accepts.
    case erlpy_http_asgi:prepare(Config0) of
        {ok, Config} ->
            case listen(Config) of
                {ok, _} = Ok -> Ok;
                Error -> erlpy_http_asgi:stop(Config), Error
            end;
        Error ->
            Error
    end.

listen(#{port := Port, ip := Ip, body_timeout := SendTimeout} = Config) ->
    %% Accepted sockets inherit these.  `buffer' is the most one receive
    %% returns (the driver hands over exactly what arrived): 64 KiB pieces
    %% of a large body, not its default of one segment.  exit_on_close
    %% false: a client that half-closes after its request (the socket is
    %% active while no body is read) still gets the response.
    SockOpts = [binary, {ip, Ip}, {active, false}, {reuseaddr, true}, {backlog, 1024},
                {nodelay, true}, {packet, raw}, {buffer, 65536},
                {send_timeout, SendTimeout}, {send_timeout_close, true}, {exit_on_close, false}
               | erlpy_nodes_http:reuseport(Config)],
    case gen_tcp:listen(Port, SockOpts) of
        {ok, Listen} ->
            {ok, RealPort} = inet:port(Listen),
            Conf = Config#{listen => Listen, port := RealPort},
            Started = case Config of
                          #{name := Name} -> supervisor:start_link({local, Name}, ?MODULE, Conf);
                          _ -> supervisor:start_link(?MODULE, Conf)
                      end,
            case Started of
                {ok, Sup} ->
                    ok = gen_tcp:controlling_process(Listen, Sup),
                    {ok, Sup};
                Error ->
                    gen_tcp:close(Listen),
                    Error
            end;
        {error, _} = Error ->
            Error
    end.

%% @doc The listener of a server.
-spec listener(pid() | atom()) -> pid().
listener(Server) ->
    case [Pid || {listener, Pid, _, _} <- supervisor:which_children(Server), is_pid(Pid)] of
        [Pid] -> Pid;
        [] -> exit({noproc, {?MODULE, listener, [Server]}})
    end.

%% @private
-spec init(map()) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init(Conf0) ->
    Conf = erlpy_http_listener:registry(Conf0),
    Children = [#{id => listener, start => {erlpy_http_listener, start_link, [Conf]},
                  %% It bounds its own wait (graceful_timeout, or the
                  %% bound given to erlpy_http:stop/2).
                  shutdown => infinity},
                #{id => acceptors, start => {erlpy_http_acceptors, start_link, [Conf]},
                  type => supervisor, shutdown => infinity}],
    {ok, {#{strategy => rest_for_one, intensity => 5, period => 10}, Children}}.
