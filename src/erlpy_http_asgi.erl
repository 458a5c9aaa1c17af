%% @private
%% @doc erlpy_http's ASGI side: which interface a server's app wants
%% (`prepare/1', with the lifespan startup before the server accepts),
%% the lifespan shutdown when it stops (`stop/1'), and one request
%% (`run/5'), which the connection process calls where it would call
%% `py_wsgi:run/5', with the same response handler and results.
-module(erlpy_http_asgi).

-export([prepare/1, stop/1, run/5]).

%% How long an app may run on after its client left (receive() said
%% http.disconnect) before its task is cancelled.
-define(DISCONNECT_GRACE, 5000).
%% How long a request runs before its socket is watched for the client's
%% leaving (a socket call each way).
-define(WATCH_AFTER, 20).

%% @doc Resolves the option `interface' (auto | wsgi | asgi) of a server's
%% configuration; for ASGI, runs the lifespan startup.  With `auto' an app
%% that cannot be loaded stays WSGI: each request then answers 500, as
%% before ASGI existed.
-spec prepare(map()) -> {ok, map()} | {error, term()}.
prepare(#{app := App} = Conf) ->
    Interface = case maps:get(interface, Conf, auto) of
                    auto ->
                        case py_asgi:interface(App) of
                            {ok, I} -> I;
                            {error, _} -> wsgi
                        end;
                    I when I =:= asgi; I =:= wsgi -> I;
                    _ -> error(badarg)
                end,
    case Interface of
        wsgi ->
            {ok, Conf#{interface => wsgi}};
        asgi ->
            case py_asgi:startup(App) of
                {ok, Sid} -> {ok, Conf#{interface => asgi, asgi_server => Sid}};
                {error, _} = Error -> Error
            end
    end.

%% @doc The lifespan shutdown of an ASGI server (after its last request).
-spec stop(map()) -> ok.
stop(#{interface := asgi, asgi_server := Sid}) ->
    py_asgi:shutdown(Sid);
stop(_Conf) ->
    ok.

%% @doc One request.  `Req' has what `py_wsgi:environ/1' takes, plus
%% `lower' (the headers, names lower-case), `socket', `pump' and `kept'.
%% Options as `py_wsgi:run/5' (`notify_read'; the worker gate is not used:
%% a request holds no worker).
-spec run(map(), map(), py_buffer:buffer() | none, py_wsgi:handler(), map()) -> {py_wsgi:result(), term()}.
run(Conf, #{socket := Sock, pump := Pump, kept := Kept} = Req, Input, {Handler, HState}, Opts) ->
    Rid = erlang:unique_integer([positive]),
    Server = case get(?MODULE) of %% a connection's requests share it
                 undefined ->
                     Local = case inet:sockname(Sock) of
                                 {ok, {Addr, Port}} -> {list_to_binary(inet:ntoa(Addr)), Port};
                                 _ -> {maps:get(server_name, Req), maps:get(server_port, Req)}
                             end,
                     put(?MODULE, Local),
                     Local;
                 Local ->
                     Local
             end,
    Scope = #{method => maps:get(method, Req), path => maps:get(path, Req),
              version => maps:get(version, Req), headers => maps:get(lower, Req),
              client => {maps:get(remote_addr, Req), maps:get(remote_port, Req)},
              server => Server, scheme => maps:get(scheme, Req), root_path => maps:get(script_name, Req)},
    case py_asgi:submit(Rid, maps:get(app, Conf), maps:get(asgi_server, Conf, none), Scope, Input,
                        #{notify_read => maps:get(notify_read, Opts, false)}) of
        {ok, Request} ->
            Timeout = maps:get(request_timeout, Conf, infinity),
            S = #{rid => Rid, request => Request, handler => Handler, hstate => HState,
                  sent => false, gone => false, sock => Sock, input => Input,
                  %% Watching the socket for the client's leaving starts
                  %% once the body is read (none, or the pump's end), and
                  %% only for a request still running after ?WATCH_AFTER ms:
                  %% most are done sooner, and need no socket call.
                  watch => case {Pump, Kept} of
                               {none, <<>>} -> later;
                               _ -> off
                           end,
                  active => maps:get(active, Req, false),
                  %% early: bytes of the client's next request that came
                  %% while watching; ended: it closed meanwhile.
                  pump => Pump, early => <<>>, ended => false,
                  deadline => case Timeout of
                                  infinity -> infinity;
                                  _ -> erlang:monotonic_time(millisecond) + Timeout
                              end},
            finish(wait(S));
        {error, closed} ->
            {{error, busy}, HState}
    end.

%% A socket the connection keeps active has its messages waiting already.
start_watch(#{active := true}) ->
    on;
start_watch(#{sock := Sock}) ->
    case inet:setopts(Sock, [{active, once}]) of
        ok -> on;
        {error, _} -> off
    end.

left(infinity) -> infinity;
left(Deadline) -> max(0, Deadline - erlang:monotonic_time(millisecond)).

%% The messages of the request until its response is complete, the app
%% ends, or it is given up.
wait(#{rid := Rid, sock := Sock, pump := Pump, watch := Watch, deadline := Deadline} = S) ->
    receive
        {asgi_response, Rid, Status, Headers, Body, More, Blocked} ->
            chunk(deliver((last(S, More))#{sent := true}, {headers, Status, Headers}), Body, More, Blocked);
        {asgi_body, Rid, Body, More, Blocked} ->
            chunk(last(S, More), Body, More, Blocked);
        {asgi_done, Rid, Result} ->
            done(S, Result);
        {py_buffer_reading, Rid} ->
            case deliver(S, read_started) of
                #{gone := true} = S2 -> gone(S2);
                S2 -> wait(S2)
            end;
        {erlpy_http_body, Pump, Result} = Msg when Watch =:= off ->
            %% The body is read (kept for the connection, which asks later).
            self() ! Msg,
            Watch2 = case Result of
                         {ok, <<>>} -> later;
                         _ -> done %% a pipelined request came already, or the body failed
                     end,
            wait(S#{watch := Watch2});
        {tcp, Sock, Data} when Watch =:= on ->
            %% A pipelined request: the client is there.  Its bytes go back
            %% to the connection, which reads them after this response (a
            %% socket watched with {active, once} is passive again; one the
            %% connection keeps active sends the rest as messages).
            wait(S#{watch := done, early := Data});
        {tcp_closed, Sock} when Watch =:= on ->
            gone(S#{watch := done});
        {tcp_error, Sock, _} when Watch =:= on ->
            gone(S#{watch := done});
        {tcp_passive, Sock} = Msg when Watch =:= on ->
            %% The connection's active count ran out: it sets it again.
            self() ! Msg,
            wait(S#{watch := done})
    after wait_time(Watch, Deadline) ->
            case Watch =:= later andalso left(Deadline) > 0 of
                true ->
                    wait(S#{watch := start_watch(S)});
                false ->
                    py_asgi:cancel(maps:get(request, S)),
                    {{error, {app_error, timeout}, maps:get(sent, S)}, S}
            end
    end.

wait_time(later, Deadline) -> min(?WATCH_AFTER, left(Deadline));
wait_time(_Watch, Deadline) -> left(Deadline).

%% Before the last chunk goes out, the socket stops being watched: the
%% client's next request, sent once it has the response, stays unread.
last(#{watch := on} = S, false) ->
    stop_watch(S);
last(S, _More) ->
    S.

chunk(S, Body, More, Blocked) ->
    S2 = case Body of
             <<>> -> S;
             _ -> deliver(S, {body, Body})
         end,
    case {S2, Blocked} of
        {#{gone := false}, true} -> ok = py_asgi:credit(maps:get(request, S2));
        _ -> ok
    end,
    case S2 of
        #{gone := true} -> gone(S2);
        _ when More -> wait(S2);
        _ -> {ok, S2}
    end.

%% The app ended before its response was complete.
done(#{sent := false} = S, ok) ->
    {{error, {app_error, no_response}, false}, S};
done(#{sent := true} = S, ok) ->
    {{error, {app_error, incomplete_response}, true}, S};
done(#{sent := Sent} = S, {python, _, _, _} = Error) ->
    {{error, {app_error, Error}, Sent}, S};
done(#{sent := Sent} = S, Other) ->
    {{error, {app_error, Other}, Sent}, S}.

%% The client left while the app runs: it is told (receive() returns
%% http.disconnect) and has a moment to end before its task is cancelled.
gone(#{rid := Rid, request := Request} = S) ->
    ok = py_asgi:disconnect(Request),
    Deadline = erlang:monotonic_time(millisecond) + ?DISCONNECT_GRACE,
    Drop = fun Drop() ->
                   receive
                       {asgi_done, Rid, _} -> ok;
                       {asgi_response, Rid, _, _, _, false, _} -> ok;
                       {asgi_body, Rid, _, false, _} -> ok;
                       {asgi_response, Rid, _, _, _, true, _} -> Drop();
                       {asgi_body, Rid, _, true, _} -> Drop();
                       {py_buffer_reading, Rid} -> Drop()
                   after left(Deadline) ->
                           py_asgi:cancel(Request)
                   end
           end,
    Drop(),
    {{error, client_closed}, S#{gone := true}}.

%% Once the client is gone, nothing more is delivered.
deliver(#{gone := true} = S, _Event) ->
    S;
deliver(#{handler := Handler, hstate := HState} = S, Event) ->
    case Handler(Event, HState) of
        {ok, HState2} ->
            S#{hstate := HState2};
        {error, _} ->
            py_asgi:disconnect(maps:get(request, S)),
            _ = maps:get(input, S) =:= none orelse py_buffer:abort(maps:get(input, S), client_closed),
            S#{gone := true}
    end.

%% The socket is passive again.  The bytes of the next request read while
%% watching go back to the connection (`early' in its state, read before
%% the socket's); a connection whose client closed meanwhile is not kept
%% alive.
finish({_Result, #{gone := true} = S}) ->
    _ = stop_watch(S),
    {{error, client_closed}, maps:get(hstate, S)};
finish({Result, S}) ->
    #{ended := Ended, early := Early, hstate := HState} = stop_watch(S),
    {Result, case HState of
                 #{keep_alive := _} when Ended -> HState#{keep_alive := false};
                 #{} -> HState#{early => Early};
                 _ -> HState
             end}.

%% Stops watching, keeping what arrived meanwhile.  A socket the connection
%% keeps active goes on sending: the connection reads that.
stop_watch(#{watch := on, active := true} = S) ->
    S#{watch := done};
stop_watch(#{watch := on, sock := Sock, early := Early} = S) ->
    _ = inet:setopts(Sock, [{active, false}]),
    receive
        {tcp, Sock, Data} -> S#{watch := done, early := <<Early/binary, Data/binary>>};
        {tcp_closed, Sock} = Msg -> self() ! Msg, S#{watch := done, ended := true};
        {tcp_error, Sock, _} = Msg -> self() ! Msg, S#{watch := done, ended := true}
    after 0 -> S#{watch := done}
    end;
stop_watch(S) ->
    S.
