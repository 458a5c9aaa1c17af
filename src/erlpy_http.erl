%% @doc erlpy's HTTP/1.1 front door: serves a Python WSGI app.
%%
%% A listener process owns the listening socket, a few acceptor processes
%% accept connections, and each connection runs in its own process
%% (`erlpy_http_conn'), which streams request bodies into a `py_buffer'
%% while the app reads them.  See docs/wsgi.md for the options and limits.
-module(erlpy_http).
-behaviour(gen_server).

-export([start_link/1, start/1, stop/1, stop/2, port/1, connections/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-type options() :: #{app := py_wsgi:app(),
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
                     python_logging => boolean()}.
-export_type([options/0]).

-define(DEFAULTS, #{port => 8080,
                    ip => {127, 0, 0, 1},
                    acceptors => 4,
                    max_connections => 1024,
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
                    max_waiting => 256,
                    access_log => true}).

%% @doc Starts a server linked to the caller.  `app' is "module:callable"
%% or a Python object handle; `port' 0 picks a free port (see `port/1').
-spec start_link(options()) -> {ok, pid()} | {error, term()}.
start_link(Opts) ->
    gen_server:start_link(?MODULE, config(Opts), []).

%% @doc Starts a server not linked to the caller.
-spec start(options()) -> {ok, pid()} | {error, term()}.
start(Opts) ->
    gen_server:start(?MODULE, config(Opts), []).

%% @doc Graceful stop: new connections are refused at once, requests in
%% flight finish (up to 30 s), idle keep-alive connections are closed.
-spec stop(pid()) -> ok.
stop(Server) ->
    stop(Server, 30000).

%% @doc Graceful stop with a bound (ms) on waiting for requests in flight.
-spec stop(pid(), timeout()) -> ok.
stop(Server, Timeout) ->
    gen_server:call(Server, {stop, Timeout}, infinity).

%% @doc The port the server listens on.
-spec port(pid()) -> inet:port_number().
port(Server) ->
    gen_server:call(Server, port).

%% @doc The number of open connections.
-spec connections(pid()) -> non_neg_integer().
connections(Server) ->
    gen_server:call(Server, connections).

config(Opts) when is_map(Opts) ->
    maps:is_key(app, Opts) orelse error(badarg),
    maps:merge(?DEFAULTS, Opts);
config(_) ->
    error(badarg).

%% ------------------------------------------------------------------ gen_server

%% @private
-spec init(map()) -> {ok, map()} | {stop, term()}.
init(#{port := Port, ip := Ip, acceptors := N, body_timeout := SendTimeout} = Config) ->
    process_flag(trap_exit, true),
    %% Python's logging to the Erlang logger (docs/wsgi.md), unless refused.
    _ = maps:get(python_logging, Config, true) andalso erlpy_python_log:install(),
    %% Accepted sockets inherit these.  `buffer' is the most one receive
    %% returns (the driver hands over exactly what arrived): 64 KiB pieces
    %% of a large body, not its default of one segment.
    SockOpts = [binary, {ip, Ip}, {active, false}, {reuseaddr, true}, {backlog, 1024},
                {nodelay, true}, {packet, raw}, {buffer, 65536},
                {send_timeout, SendTimeout}, {send_timeout_close, true}],
    case gen_tcp:listen(Port, SockOpts) of
        {ok, Listen} ->
            {ok, RealPort} = inet:port(Listen),
            Self = self(),
            Conf = Config#{server => Self, port := RealPort, slots => slots(Config)},
            Acceptors = [spawn_link(fun() -> accept_loop(Listen, Conf) end) || _ <- lists:seq(1, N)],
            {ok, #{listen => Listen, config => Conf, acceptors => Acceptors, conns => #{},
                   stopping => false, waiters => []}};
        {error, Reason} ->
            {stop, Reason}
    end.

%% @private
-spec handle_call(term(), gen_server:from(), map()) -> {reply, term(), map()} | {noreply, map()}.
handle_call({register, _Pid}, _From, #{stopping := true} = S) ->
    {reply, stopping, S};
handle_call({register, Pid}, _From, #{conns := Conns, config := #{max_connections := Max}} = S) ->
    case map_size(Conns) >= Max of
        true -> {reply, full, S};
        false -> {reply, ok, S#{conns := Conns#{Pid => erlang:monitor(process, Pid)}}}
    end;
handle_call(port, _From, #{config := #{port := Port}} = S) ->
    {reply, Port, S};
handle_call(connections, _From, #{conns := Conns} = S) ->
    {reply, map_size(Conns), S};
handle_call({stop, Timeout}, From, #{listen := Listen, conns := Conns, acceptors := Acceptors} = S) ->
    ok = gen_tcp:close(Listen),
    lists:foreach(fun(A) -> unlink(A), exit(A, shutdown) end, Acceptors),
    lists:foreach(fun(Pid) -> Pid ! {erlpy_http, stop} end, maps:keys(Conns)),
    S2 = S#{stopping := true, acceptors := [], waiters := [From | maps:get(waiters, S)]},
    case map_size(Conns) of
        0 -> {stop, normal, ok, S2};
        _ -> erlang:send_after(Timeout, self(), stop_timeout), {noreply, S2}
    end.

%% @private
-spec handle_cast(term(), map()) -> {noreply, map()}.
handle_cast(_Msg, S) ->
    {noreply, S}.

%% @private
-spec handle_info(term(), map()) -> {noreply, map()} | {stop, term(), map()}.
handle_info({'DOWN', _, process, Pid, _}, #{conns := Conns} = S) ->
    S2 = S#{conns := maps:remove(Pid, Conns)},
    case S2 of
        #{stopping := true, conns := C} when map_size(C) =:= 0 -> {stop, normal, S2};
        _ -> {noreply, S2}
    end;
handle_info(stop_timeout, #{conns := Conns} = S) ->
    [exit(Pid, kill) || Pid <- maps:keys(Conns)],
    {stop, normal, S};
handle_info({'EXIT', _Pid, Reason}, #{stopping := false} = S) when Reason =/= normal ->
    {stop, Reason, S};
handle_info(_Msg, S) ->
    {noreply, S}.

%% @private
-spec terminate(term(), map()) -> ok.
terminate(_Reason, #{waiters := Waiters}) ->
    [gen_server:reply(W, ok) || W <- Waiters],
    ok.

%% The workers this server's requests may take at once: by default all
%% contexts but one, left to the node's other callers.
slots(#{max_waiting := MaxWaiting} = Config) ->
    Max = maps:get(max_workers, Config, max(1, py:contexts() - 1)),
    erlpy_http_slots:new(Max, MaxWaiting).

%% ------------------------------------------------------------------ acceptors

accept_loop(Listen, #{server := Server} = Conf) ->
    case gen_tcp:accept(Listen) of
        {ok, Socket} ->
            Pid = proc_lib:spawn(erlpy_http_conn, init, [Socket, Conf]),
            ok = gen_tcp:controlling_process(Socket, Pid),
            Verdict = case gen_server:call(Server, {register, Pid}) of
                          ok -> go;
                          _Full -> refuse
                      end,
            Pid ! {erlpy_http, Verdict},
            accept_loop(Listen, Conf);
        {error, closed} ->
            ok;
        {error, _} ->
            accept_loop(Listen, Conf)
    end.
