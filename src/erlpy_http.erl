%% @doc erlpy's HTTP/1.1 front door: serves a Python WSGI app.
%%
%% A server is a supervisor (`erlpy_http_server') over a listener and a few
%% acceptors; each connection runs in its own process (`erlpy_http_conn'),
%% which streams request bodies into a `py_buffer' while the app reads
%% them.  Servers from `start/1' live under erlpy's supervisor; put one in
%% your own tree with `child_spec/1'.  See docs/wsgi.md for the options,
%% supervision and limits.
-module(erlpy_http).

-export([start_link/1, start/1, child_spec/1, stop/1, stop/2, port/1, connections/1]).

-type options() :: #{app := py_wsgi:app(),
                     interface => auto | wsgi | asgi,
                     request_timeout => timeout(),
                     port => inet:port_number(),
                     ip => inet:ip_address(),
                     acceptors => pos_integer(),
                     max_connections => pos_integer(),
                     idle_timeout => timeout(),
                     header_timeout => timeout(),
                     body_timeout => timeout(),
                     max_header_size => pos_integer(),
                     max_headers => pos_integer(),
                     max_body => non_neg_integer() | infinity,
                     max_drain => non_neg_integer(),
                     max_unread => pos_integer(),
                     min_body_rate => non_neg_integer(),
                     buffer_body => non_neg_integer(),
                     max_workers => pos_integer() | infinity,
                     max_waiting => non_neg_integer(),
                     access_log => boolean(),
                     proxy_headers => boolean(),
                     forwarded_allow_ips => erlpy_http_proxy:allowed(),
                     root_path => binary(),
                     python_logging => boolean(),
                     graceful_timeout => timeout(),
                     worker_nodes => non_neg_integer(),
                     max_requests => pos_integer(),
                     name => atom()}.
-type server() :: pid() | atom().
-export_type([options/0, server/0]).

-define(DEFAULTS, #{port => 8080,
                    ip => {127, 0, 0, 1},
                    acceptors => 4,
                    max_connections => 4096,
                    idle_timeout => 60000,
                    header_timeout => 10000,
                    body_timeout => 30000,
                    max_header_size => 8192,
                    max_headers => 100,
                    max_body => infinity,
                    max_drain => 1048576,
                    max_unread => 1048576,
                    min_body_rate => 1024,
                    buffer_body => 131072,
                    max_waiting => 1024,
                    access_log => true,
                    proxy_headers => true,
                    forwarded_allow_ips => [{127, 0, 0, 1}, {0, 0, 0, 0, 0, 0, 0, 1}],
                    root_path => <<>>,
                    graceful_timeout => 30000}).

%% @doc Starts a server linked to the caller (not under erlpy's
%% supervisor).  `app' is "module:callable" or a Python object handle;
%% `port' 0 picks a free port (see `port/1').
-spec start_link(options()) -> {ok, pid()} | {error, term()}.
start_link(Opts) ->
    erlpy_http_server:start_link(config(Opts)).

%% @doc Starts a server under erlpy's supervisor (`erlpy_sup'), not linked
%% to the caller: it runs until `stop/1,2' or until the application stops.
%% `{error, eaddrinuse}' when the port is taken.
-spec start(options()) -> {ok, pid()} | {error, term()}.
start(Opts) ->
    Config = config(Opts),
    try
        supervisor:start_child(erlpy_http_sup, [Config])
    catch
        exit:{noproc, _} -> {error, not_started}
    end.

%% @doc A child specification for a server in the caller's own supervision
%% tree (id `{erlpy_http, Port}'; with option `name' the server is
%% registered under that name, which `port/1', `connections/1' and `stop/1'
%% accept).  Its shutdown is graceful: see `stop/1'.
-spec child_spec(options()) -> supervisor:child_spec().
child_spec(Opts) ->
    #{port := Port} = Config = config(Opts),
    #{id => {?MODULE, maps:get(name, Config, Port)},
      start => {erlpy_http_server, start_link, [Config]},
      type => supervisor, shutdown => infinity}.

%% @doc Graceful stop: new connections are refused at once, idle keep-alive
%% connections are closed, requests in flight finish (up to the server's
%% `graceful_timeout', default 30 s; still running then: closed).
-spec stop(server()) -> ok.
stop(Server) ->
    stop(Server, undefined).

%% @doc Graceful stop with a bound (ms) on waiting for requests in flight.
%% For a server from `child_spec/1', stop it through its supervisor
%% (`supervisor:terminate_child/2'); stopping it here makes a permanent
%% child restart.
-spec stop(server(), timeout() | undefined) -> ok.
stop(Server, Timeout) ->
    Pid = if is_atom(Server) -> whereis(Server); true -> Server end,
    is_pid(Pid) orelse exit({noproc, {?MODULE, stop, [Server, Timeout]}}),
    Timeout =:= undefined orelse
        gen_server:call(erlpy_http_server:listener(Pid), {graceful_timeout, Timeout}, infinity),
    case catch supervisor:terminate_child(erlpy_http_sup, Pid) of
        ok -> ok;
        _NotOurs -> proc_lib:stop(Pid, normal, infinity)
    end.

%% @doc The port the server listens on.
-spec port(server()) -> inet:port_number().
port(Server) ->
    gen_server:call(erlpy_http_server:listener(Server), port).

%% @doc The number of open connections.
-spec connections(server()) -> non_neg_integer().
connections(Server) ->
    gen_server:call(erlpy_http_server:listener(Server), connections).

config(Opts) when is_map(Opts) ->
    maps:is_key(app, Opts) orelse error(badarg),
    lists:member(maps:get(interface, Opts, auto), [auto, wsgi, asgi]) orelse error(badarg),
    Config = maps:merge(?DEFAULTS, Opts),
    #{proxy_headers := Proxy, forwarded_allow_ips := Allowed, root_path := Root} = Config,
    is_boolean(Proxy) andalso ips(Allowed) orelse error(badarg),
    Config#{root_path := mount_point(Root)};
config(_) ->
    error(badarg).

ips(all) ->
    true;
ips(Allowed) ->
    try lists:all(fun inet:is_ip_address/1, Allowed) catch error:_ -> false end.

%% "" or "/a/b": no trailing slash (SCRIPT_NAME "/" is invalid, PEP 3333).
mount_point(<<>>) ->
    <<>>;
mount_point(<<"/", _/binary>> = Root) ->
    case binary:last(Root) of
        $/ -> mount_point(binary:part(Root, 0, byte_size(Root) - 1));
        _ -> Root
    end;
mount_point(_) ->
    error(badarg).
