%% @private
%% @doc An HTTP server spread over worker nodes (`erlpy_http' option
%% `worker_nodes => N', `bin/erlpy serve --workers N').
%%
%% Each worker node runs an ordinary `erlpy_http' server on the same port,
%% its listening socket opened with `SO_REUSEPORT': the kernel spreads new
%% connections over the nodes, and each body goes straight to the node that
%% serves it.  This node only supervises: the pool (`py_nodes') starts a
%% node that dies again and starts the server there; stopping the pool
%% stops every node's server gracefully first.  With `max_requests', a node
%% that has begun that many requests (plus a little jitter, so that nodes do
%% not all go at once) stops its server gracefully and is started afresh,
%% as gunicorn's `--max-requests' does.
-module(erlpy_nodes_http).

-export([start_link/1, reuseport/1, serve_here/3, stop_here/0, set_here/1, handle_pool_call/3]).
-export([log/2]).

-define(SERVER, erlpy_http_node).  %% the server's name on a worker node

%% @doc Starts the pool of worker nodes for a server, and the server on
%% each, listening on the same port (port 0: one picked here).
-spec start_link(map()) -> {ok, pid()} | {error, term()}.
start_link(#{worker_nodes := N, ip := Ip, port := Port0} = Config) ->
    case node() of
        nonode@nohost ->
            {error, not_distributed};
        _ ->
            %% Held while the nodes start: port 0 gets its number here, and
            %% a port in use is a plain {error, eaddrinuse}.
            case gen_tcp:listen(Port0, [{ip, Ip}, {reuseaddr, true} | reuseport(#{reuseport => true})]) of
                {ok, Reserve} ->
                    {ok, Port} = inet:port(Reserve),
                    Pool = maps:get(name, Config, list_to_atom("erlpy_http_" ++ integer_to_list(Port))),
                    Server = maps:without([worker_nodes, max_requests, name], Config),
                    Recycle = maps:get(max_requests, Config, infinity),
                    #{level := Level} = logger:get_primary_config(),
                    Started = py_nodes:start_link(
                                #{name => Pool, count => N,
                                  setup => [{?MODULE, serve_here, [Server#{port := Port, reuseport => true,
                                                                           log_level => Level},
                                                                   Recycle, {Pool, node()}]}],
                                  teardown => [{?MODULE, stop_here, []}],
                                  handler => {?MODULE, #{port => Port}}}),
                    gen_tcp:close(Reserve),
                    Started;
                {error, _} = Error ->
                    Error
            end
    end.

%% @doc The listening socket option that lets several sockets (here: one
%% per worker node) listen on one port: `SO_REUSEPORT' (Linux: level 1,
%% option 15; OTP 25 has no name for it).
-spec reuseport(map()) -> [gen_tcp:listen_option()].
reuseport(#{reuseport := true}) -> [{raw, 1, 15, <<1:32/native>>}];
reuseport(_) -> [].

%% @doc On a worker node: loads the app, starts the server, and, with
%% `max_requests', a watcher that recycles the node.
-spec serve_here(map(), pos_integer() | infinity, {atom(), node()}) -> {ok, pid()} | {error, term()}.
serve_here(#{app := App, log_level := Level} = Server0, Recycle, Pool) ->
    Server = maps:remove(log_level, Server0),
    forward_logs(Level, Pool),
    is_binary(App) andalso ({ok, _} = py:call(erlpy_wsgi, load_app, [App])),
    case erlpy_http:start(Server#{name => ?SERVER}) of
        {ok, Pid} ->
            Recycle =:= infinity orelse
                spawn(fun() -> recycle_after(Recycle + rand:uniform(max(1, Recycle div 10)), Pool) end),
            {ok, Pid};
        Error ->
            Error
    end.

%% The node's log events (the access log, Python's logging, errors) go to
%% the front node's logger, whose handlers (bin/erlpy's stderr and
%% --access-log) and level decide: this node's only handler sends them
%% to the pool process, which logs them there.
forward_logs(Level, Pool) ->
    _ = logger:remove_handler(default),
    ok = logger:set_primary_config(level, Level),
    ok = logger:add_handler(erlpy_nodes_http, ?MODULE, #{config => #{pool => Pool}}).

%% @doc A logger handler on a worker node: sends the event to the pool.
-spec log(logger:log_event(), logger:handler_config()) -> ok.
log(Event, #{config := #{pool := {Pool, Front}}}) ->
    {Pool, Front} ! {log, Event},
    ok.

%% Polls the node's request count (a counter read: cheap); past the limit,
%% and once the pool lets it (one node at a time, the others up), stops
%% the server gracefully and asks the pool for a fresh node.
recycle_after(Limit, {Pool, Front} = P) ->
    case erlpy_http_listener:requests() >= Limit andalso
        (catch gen_server:call({Pool, Front}, {may_recycle, node()}, 10000)) =:= true of
        true ->
            logger:info("erlpy: worker node ~s served ~b requests: recycling it", [node(), Limit]),
            stop_here(),
            gen_server:cast({Pool, Front}, {recycle, node()});
        false ->
            timer:sleep(100),
            recycle_after(Limit, P)
    end.

%% @doc On a worker node: stops its server gracefully.
-spec stop_here() -> ok.
stop_here() ->
    case whereis(?SERVER) of
        undefined ->
            ok;
        _ ->
            %% The listening socket closes first, while the acceptors still
            %% wait in accept: a connection the kernel gave this node's
            %% socket is taken by them, not reset by a close after they
            %% stopped (what is queued at the close itself is reset, unless
            %% net.ipv4.tcp_migrate_req moves it to another node's socket).
            #{listen := Listen} = sys:get_state(erlpy_http_server:listener(?SERVER)),
            _ = gen_tcp:close(Listen),
            erlpy_http:stop(?SERVER)
    end.

%% @doc What `erlpy_http:port/1', `connections/1' and `stop/2' ask a server,
%% answered for the pool.
-spec handle_pool_call(term(), [node()], map()) -> term().
handle_pool_call(which_children, _Nodes, _Info) ->
    %% erlpy_http_server:listener/1: the pool answers for its listeners.
    [{listener, self(), worker, [py_nodes]}];
handle_pool_call(port, _Nodes, #{port := Port}) ->
    Port;
handle_pool_call(connections, Nodes, _Info) ->
    lists:sum([N || {ok, N} <- erpc:multicall(Nodes, erlpy_http, connections, [?SERVER], 5000)]);
handle_pool_call({graceful_timeout, _} = Set, Nodes, _Info) ->
    _ = erpc:multicall(Nodes, ?MODULE, set_here, [Set], 5000),
    ok.

%% @doc On a worker node: passes a setting to its server's listener.
-spec set_here(term()) -> term().
set_here(Set) ->
    gen_server:call(erlpy_http_server:listener(?SERVER), Set).
