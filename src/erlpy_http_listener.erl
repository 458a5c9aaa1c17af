%% @private
%% @doc A server's listener: holds its configuration, answers `port/1' and
%% `connections/1', and stops it gracefully when the server stops.
%%
%% The connection registry lives in the server's configuration: an
%% `atomics' counter (acceptors add, connections subtract: no process is
%% asked per connection) and an ETS set of the connection processes (so
%% that a stop can reach them).  An acceptor registers a connection before
%% handing it the socket; acceptors stop before the listener does, so a
%% stop sees every connection.
-module(erlpy_http_listener).
-behaviour(gen_server).

-export([start_link/1, registry/1, register/2, unregister/2, count_request/0, requests/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

%% @doc Adds a fresh registry (counter and table) and the server's worker
%% gate (`py:gate/2', none for `max_workers => infinity') to a
%% configuration.  Called by the server's supervisor, which owns their
%% tables: they outlive restarts of its children.
-spec registry(map()) -> map().
registry(#{max_waiting := MaxWaiting} = Conf) ->
    %% By default all contexts but one, left to the node's other callers.
    Gate = case maps:get(max_workers, Conf, max(1, py:contexts() - 1)) of
               infinity -> #{};
               MaxWorkers -> #{gate => py:gate(MaxWorkers, MaxWaiting)}
           end,
    maps:merge(Conf#{count => atomics:new(1, [{signed, true}]),
                     conns => ets:new(erlpy_http_conns, [set, public, {write_concurrency, true}])},
               Gate).

%% @doc Counts a request begun by one of this node's servers.
-spec count_request() -> ok.
count_request() ->
    counters:add(request_counter(), 1, 1).

%% @doc Requests this node's servers have begun (`erlpy_nodes_http'
%% recycles a worker node after `max_requests').
-spec requests() -> non_neg_integer().
requests() ->
    counters:get(request_counter(), 1).

request_counter() ->
    case persistent_term:get({?MODULE, requests}, undefined) of
        undefined ->
            C = counters:new(1, [write_concurrency]),
            persistent_term:put({?MODULE, requests}, C),
            persistent_term:get({?MODULE, requests});
        C ->
            C
    end.

%% @doc Registers a connection; returns how many are open now.
-spec register(map(), pid()) -> integer().
register(#{count := Count, conns := Conns}, Pid) ->
    true = ets:insert(Conns, {Pid}),
    atomics:add_get(Count, 1, 1).

%% @doc Unregisters a connection (called by an acceptor, or by the
%% connection as it ends).  The table may be gone with a server killed
%% outright: nothing left to count then.
-spec unregister(map(), pid()) -> ok.
unregister(#{count := Count, conns := Conns}, Pid) ->
    try ets:delete(Conns, Pid) of
        true -> atomics:sub(Count, 1, 1)
    catch
        error:badarg -> ok
    end.

%% @doc Starts the listener.
-spec start_link(map()) -> {ok, pid()}.
start_link(Conf) ->
    gen_server:start_link(?MODULE, Conf, []).

%% @private
-spec init(map()) -> {ok, map()}.
init(Conf) ->
    %% Trapping exits makes the supervisor's shutdown run terminate/2.
    process_flag(trap_exit, true),
    %% Python's logging to the Erlang logger (docs/wsgi.md), unless refused.
    _ = maps:get(python_logging, Conf, true) andalso erlpy_python_log:install(),
    {ok, Conf}.

%% @private
-spec handle_call(term(), gen_server:from(), map()) -> {reply, term(), map()}.
handle_call(port, _From, #{port := Port} = Conf) ->
    {reply, Port, Conf};
handle_call(connections, _From, #{count := Count} = Conf) ->
    {reply, atomics:get(Count, 1), Conf};
handle_call({graceful_timeout, Timeout}, _From, Conf) ->
    {reply, ok, Conf#{graceful_timeout := Timeout}}.

%% @private
-spec handle_cast(term(), map()) -> {noreply, map()}.
handle_cast(_Msg, Conf) ->
    {noreply, Conf}.

%% @private
-spec handle_info(term(), map()) -> {noreply, map()}.
handle_info(_Msg, Conf) ->
    {noreply, Conf}.

%% @private
%% A stop: the listening socket closes (new connections are refused), each
%% connection is told (an idle one closes, one in flight finishes its
%% response, then closes), and those still open after `graceful_timeout'
%% are killed.  After a crash of this process the socket stays open for
%% its successor.
-spec terminate(term(), map()) -> ok.
terminate(Reason, #{listen := Listen, conns := Conns, graceful_timeout := Timeout} = Conf)
  when Reason =:= shutdown; Reason =:= normal; element(1, Reason) =:= shutdown ->
    _ = gen_tcp:close(Listen),
    Pids = [Pid || {Pid} <- ets:tab2list(Conns)],
    Monitors = maps:from_list([{erlang:monitor(process, Pid), Pid} || Pid <- Pids]),
    lists:foreach(fun(Pid) -> Pid ! {erlpy_http, stop} end, Pids),
    Deadline = case Timeout of
                   infinity -> infinity;
                   _ -> erlang:monotonic_time(millisecond) + Timeout
               end,
    drain(Monitors, Deadline),
    erlpy_http_asgi:stop(Conf);
terminate(_Reason, _Conf) ->
    ok.

drain(Monitors, _Deadline) when map_size(Monitors) =:= 0 ->
    ok;
drain(Monitors, Deadline) ->
    Left = case Deadline of
               infinity -> infinity;
               _ -> max(0, Deadline - erlang:monotonic_time(millisecond))
           end,
    receive
        {'DOWN', Ref, process, _, _} when is_map_key(Ref, Monitors) ->
            drain(maps:remove(Ref, Monitors), Deadline)
    after Left ->
            lists:foreach(fun(Pid) -> exit(Pid, kill) end, maps:values(Monitors))
    end.
