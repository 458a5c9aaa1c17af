%% @private
%% @doc One HTTP/1.1 connection: reads requests (keep-alive, pipelining),
%% streams each body into a py_buffer through `erlpy_http_body', runs the
%% WSGI app with `py_wsgi' and writes the response as the app produces it.
-module(erlpy_http_conn).

-export([init/2, lower/1, trim/1]).

-include_lib("kernel/include/logger.hrl").

-define(CRLF, "\r\n").
-define(LINGER_QUIET, 2000).
-define(LINGER_MAX, 30000).
%% While no body is being read, the socket sends what arrives as messages,
%% this many at a time: one inet:setopts/2 (which also re-arms the poll
%% set) per ?ACTIVE_N requests instead of one per request.  At most this
%% many receives (64 KiB each) wait in the mailbox while a request runs.
-define(ACTIVE_N, 8).

%% @doc Entry point of the connection process (spawned by an acceptor, which
%% registered it with the server and then sends `go', or `refuse' when the
%% server is full).  It unregisters itself as it ends.
-spec init(gen_tcp:socket(), map()) -> ok.
init(Socket, Conf) ->
    receive
        {erlpy_http, go} ->
            Peer = case inet:peername(Socket) of
                       {ok, {Addr, Port}} -> {Addr, list_to_binary(inet:ntoa(Addr)), Port};
                       _ -> {undefined, <<>>, 0}
                   end,
            try
                idle(#{socket => Socket, conf => Conf, peer => Peer, received => <<>>, active => false})
            after
                erlpy_http_listener:unregister(Conf, self())
            end;
        {erlpy_http, refuse} ->
            _ = gen_tcp:send(Socket, simple_response(503, <<"too many connections">>, close)),
            %% A plain close with request bytes unread resets the
            %% connection, and the client may lose the 503.
            lingering_close(Socket);
        {erlpy_http, stop} ->
            %% The server stopped before this connection started.
            erlpy_http_listener:unregister(Conf, self()),
            gen_tcp:close(Socket)
    end.

%% Waiting for a request.  A pipelined one may have arrived already, with
%% the previous request; otherwise the socket is active (?ACTIVE_N), so a
%% stop request closes an idle keep-alive connection at once.  The socket
%% does not close itself when the client half-closes (exit_on_close is
%% false): the response to a request sent just before still goes out.
idle(#{socket := Sock, conf := #{idle_timeout := Idle}, received := <<>>} = S0) ->
    case activate(S0) of
        {ok, S} ->
            receive
                {tcp, Sock, Data} -> request(S#{received := Data});
                {tcp_passive, Sock} -> idle(S#{active := false});
                {tcp_closed, Sock} -> gen_tcp:close(Sock);
                {tcp_error, Sock, _} -> gen_tcp:close(Sock);
                {erlpy_http, stop} -> gen_tcp:close(Sock)
            after Idle ->
                    gen_tcp:close(Sock)
            end;
        error ->
            gen_tcp:close(Sock)
    end;
idle(S) ->
    request(S).

activate(#{active := true} = S) ->
    {ok, S};
activate(#{socket := Sock} = S) ->
    case inet:setopts(Sock, [{active, ?ACTIVE_N}]) of
        ok -> {ok, S#{active := true}};
        {error, _} -> error
    end.

%% A body is read by its pump with gen_tcp:recv/3: the socket stops sending
%% messages, and the bytes it sent already go before the rest.  (A close or
%% error it reported stays in the mailbox; a receive reports it again.)
passive(#{active := false} = S) ->
    S;
passive(#{socket := Sock} = S) ->
    _ = inet:setopts(Sock, [{active, false}]),
    flush_received(S#{active := false}).

flush_received(#{socket := Sock, received := Bytes} = S) ->
    receive
        {tcp, Sock, Data} -> flush_received(S#{received := <<Bytes/binary, Data/binary>>});
        {tcp_passive, Sock} -> flush_received(S)
    after 0 ->
            S
    end.

%% The request head is parsed from the bytes received (erlang:decode_packet,
%% the parser gen_tcp's http packet mode uses), receiving more as needed:
%% one receive for a typical request, and the bytes after the head stay
%% at hand for the body or the next request.
request(#{socket := Sock, conf := #{header_timeout := HT}} = S) ->
    Deadline = case HT of
                   infinity -> infinity;
                   _ -> erlang:monotonic_time(millisecond) + HT
               end,
    case request_line(S, Deadline) of
        {ok, {Method, Target, Version}, Headers, S2} -> dispatch(S2, Method, Target, Version, Headers);
        {error, Status, Why} -> fail(S, Status, Why);
        {error, Status, Why, Method} -> fail(S, Status, Why, Method);
        closed -> gen_tcp:close(Sock)
    end.

request_line(#{received := Bytes} = S, Deadline) ->
    case erlang:decode_packet(http_bin, Bytes, [{packet_size, line_limit(S)}]) of
        {ok, {http_request, Method, Target, Version}, Rest} ->
            case headers(S#{received := Rest}, Deadline, {method(Method), Target, Version}, [], 0, 0) of
                {error, Status, Why} -> {error, Status, Why, method(Method)};
                Result -> Result
            end;
        {ok, {http_error, Blank}, Rest} when Blank =:= <<"\r\n">>; Blank =:= <<"\n">> ->
            %% RFC 9112 2.2: empty lines before a request line are ignored.
            request_line(S#{received := Rest}, Deadline);
        {ok, _, _} ->
            {error, 400, <<"bad request line">>};
        {more, _} ->
            then(receive_more(S, Deadline), fun(S2) -> request_line(S2, Deadline) end);
        {error, _} ->
            {error, 414, <<"request line too long">>}
    end.

headers(#{received := Bytes, conf := Conf} = S, Deadline, Line, Acc, Count, Size) ->
    #{max_headers := MaxCount, max_header_size := MaxSize} = Conf,
    case erlang:decode_packet(httph_bin, Bytes, [{packet_size, line_limit(S)}]) of
        {ok, http_eoh, Rest} ->
            {ok, Line, lists:reverse(Acc), S#{received := Rest}};
        {ok, {http_header, _, Name, _, Value}, Rest} ->
            N = name(Name),
            Size2 = Size + byte_size(N) + byte_size(Value) + 4,
            %% RFC 9112 5.2: a value folded over lines (obs-fold) is
            %% rejected, not unfolded: a proxy in front may not unfold it.
            Folded = binary:match(Value, <<"\n">>) =/= nomatch,
            %% RFC 9110 5.5: CR and NUL in a value are rejected too.
            BadByte = binary:match(Value, [<<"\r">>, <<0>>]) =/= nomatch,
            if
                N =:= <<>> -> {error, 400, <<"empty header name">>};
                Folded -> {error, 400, <<"folded header line">>};
                BadByte -> {error, 400, <<"CR or NUL in a header value">>};
                Count + 1 > MaxCount -> {error, 431, <<"too many header fields">>};
                Size2 > MaxSize -> {error, 431, <<"header section too large">>};
                true -> headers(S#{received := Rest}, Deadline, Line, [{N, Value} | Acc], Count + 1, Size2)
            end;
        {ok, _, _} ->
            {error, 400, <<"bad header line">>};
        {more, _} ->
            then(receive_more(S, Deadline), fun(S2) -> headers(S2, Deadline, Line, Acc, Count, Size) end);
        {error, _} ->
            {error, 431, <<"header line too long">>}
    end.

receive_more(#{socket := Sock, received := Bytes, active := Active} = S, Deadline) ->
    Left = case Deadline of
               infinity -> infinity;
               _ -> max(0, Deadline - erlang:monotonic_time(millisecond))
           end,
    case Active of
        true ->
            receive
                {tcp, Sock, Data} -> {ok, S#{received := <<Bytes/binary, Data/binary>>}};
                {tcp_passive, Sock} -> receive_more(S#{active := false}, Deadline);
                {tcp_closed, Sock} -> closed;
                {tcp_error, Sock, _} -> closed
            after Left ->
                    {error, 408, <<"header timeout">>}
            end;
        false ->
            case gen_tcp:recv(Sock, 0, Left) of
                {ok, Data} -> {ok, S#{received := <<Bytes/binary, Data/binary>>}};
                {error, timeout} -> {error, 408, <<"header timeout">>};
                {error, _} -> closed
            end
    end.

then({ok, S}, Next) -> Next(S);
then(Error, _Next) -> Error.

%% A request line or header field line may be this long (the header section
%% as a whole is bounded by max_header_size).
line_limit(#{conf := #{max_header_size := MaxSize}}) ->
    max(MaxSize * 2, 65536).

dispatch(S, Method, Target, Version, Headers) ->
    Lower = [{lower(N), V} || {N, V} <- Headers],
    Path = path(Target),
    Expect = [lower(V) || {<<"expect">>, V} <- Lower],
    if
        Version =/= {1, 1}, Version =/= {1, 0} ->
            fail(S, 505, <<"HTTP version not supported">>, Method);
        Path =:= error ->
            fail(S, 400, <<"bad request target">>, Method);
        Version =:= {1, 1} ->
            case [H || {<<"host">>, H} <- Lower] of
                [] -> fail(S, 400, <<"missing Host header">>, Method);
                [_, _ | _] -> fail(S, 400, <<"more than one Host header">>, Method);
                [_] when Expect =/= [], Expect =/= [<<"100-continue">>] ->
                    fail(S, 417, <<"unsupported expectation">>, Method);
                [_] -> with_framing(S, Method, Path, Version, Headers, Lower, Expect =/= [])
            end;
        true ->
            %% HTTP/1.0 knows no 100-continue: never answered.
            with_framing(S, Method, Path, Version, Headers, Lower, false)
    end.

with_framing(S, Method, Path, Version, Headers, Lower, Expect) ->
    case framing(Lower, S) of
        {ok, Framing} -> serve(S, Method, Path, Version, Headers, Lower, Framing, Expect);
        {error, Status, Why} -> fail(S, Status, Why, Method)
    end.

serve(S0, Method, Path, Version, Headers, Lower, Framing, Expect0) ->
    Start = erlang:monotonic_time(microsecond),
    #{socket := Sock, conf := Conf} = S = case Framing of
                                              none -> S0;
                                              _ -> passive(S0)
                                          end,
    Expect = Expect0 andalso Framing =/= none andalso Framing =/= {length, 0},
    %% A body small enough to be read before the app gets its 100 now; a
    %% bigger one when the app first waits for it.
    Small = small_body(Framing, maps:get(buffer_body, Conf, 0)),
    Early = Expect andalso Small,
    Continued = not Early orelse gen_tcp:send(Sock, <<"HTTP/1.1 100 Continue\r\n\r\n">>) =:= ok,
    {Input, Pump, Kept} = erlpy_http_body:start(Sock, Framing, maps:get(received, S),
                                                Conf#{expect => Expect andalso not Early}),
    case Continued andalso (not Small orelse erlpy_http_body:buffered(Pump)) of
        {error, Reason} ->
            body_failed(S, Reason, Method);
        false ->
            erlpy_http_body:stop(Pump),
            gen_tcp:close(Sock);
        _ ->
            run(S, Start, Method, Path, Version, Headers, Lower, Framing, Expect andalso not Early,
                {Input, Pump, Kept})
    end.

%% Whether the body is read before the app starts (when it ends within
%% buffer_body bytes, for chunked).
small_body(chunked, Max) -> Max > 0;
small_body({length, N}, Max) -> N =< Max;
small_body(none, _Max) -> false.

%% Bytes wait in the driver: the kernel's send buffer is full, and a send
%% may wait for the client to read.  (port_info costs a fifth of getstat.)
backlogged(Sock) when is_port(Sock) ->
    case erlang:port_info(Sock, queue_size) of
        {queue_size, N} -> N > 0;
        undefined -> false
    end;
backlogged(Sock) ->
    case inet:getstat(Sock, [send_pend]) of
        {ok, [{send_pend, N}]} -> N > 0;
        _ -> false
    end.

%% The body failed before the app started: the app need not see it.
body_failed(#{socket := Sock} = S, Reason, Method) ->
    case body_error_status(Reason) of
        {500, _} -> gen_tcp:close(Sock); %% the client is gone
        {Code, Why} -> fail(S, Code, Why, Method)
    end.

body_error_status(too_large) -> {413, <<"request body too large">>};
body_error_status(bad_chunk) -> {400, <<"bad chunked encoding">>};
body_error_status(timeout) -> {408, <<"request body timeout">>};
body_error_status(_) -> {500, <<"internal server error">>}.

run(#{socket := Sock, conf := Conf, peer := Peer} = S, Start, Method, Path, Version,
    Headers, Lower, Framing, Expect, {Input, Pump, Kept}) ->
    {Scheme, {Addr, Port}} = erlpy_http_proxy:client(Conf, Lower, Peer),
    Req = #{method => Method, path => Path, version => Version,
            headers => Headers, server_name => server_name(Lower, Sock),
            server_port => maps:get(port, Conf), remote_addr => Addr,
            remote_port => Port, scheme => Scheme, script_name => maps:get(root_path, Conf)},
    R0 = #{sock => Sock, version => Version, head => Method =:= <<"HEAD">>,
           keep_alive => keep_alive(Version, Lower, Framing), expect => Expect,
           pump => Pump, status => 0, sent => false, pending => [], framing => none,
           left => infinity, bytes => 0},
    erlpy_http_listener:count_request(),
    Gate = maps:with([gate], Conf),
    Opts = Gate#{notify_read => Expect, would_block => fun() -> backlogged(Sock) end},
    {Result, R} = case Conf of
                      #{interface := asgi} ->
                          erlpy_http_asgi:run(Conf, Req#{lower => Lower, socket => Sock, pump => Pump, kept => Kept,
                                                         active => maps:get(active, S)},
                                              Input, {fun respond/2, R0}, Opts);
                      _ ->
                          py_wsgi:run(maps:get(app, Conf), py_wsgi:environ(Req), Input, {fun respond/2, R0}, Opts)
                  end,
    R2 = finish(Result, R, Pump),
    maps:get(access_log, Conf) andalso
        ?LOG_INFO("~s ~s ~s ~b ~b ~bus",
                  [Addr, Method, Path, maps:get(status, R2), maps:get(bytes, R2),
                   erlang:monotonic_time(microsecond) - Start], #{domain => [erlpy, access]}),
    Next = maps:get(keep_alive, R2) andalso erlpy_http_body:drained(Pump, Input, Conf),
    case {Next, Pump} of
        {{ok, Rest}, _} ->
            case stopping() of
                false ->
                    %% An ASGI request's watch may have read the next
                    %% request's first bytes (early).
                    Early = maps:get(early, R2, <<>>),
                    idle(S#{received := <<Kept/binary, Rest/binary, Early/binary>>});
                true -> gen_tcp:close(Sock)
            end;
        {_, none} ->
            gen_tcp:close(Sock);
        _ ->
            %% Body bytes may still be on their way: a plain close would
            %% make the kernel reset the connection, and the client could
            %% lose the response.
            erlpy_http_body:stop(Pump),
            lingering_close(Sock)
    end.

%% The response handler py_wsgi calls with each event.
respond(read_started, #{expect := true, sent := false, sock := Sock, pump := Pump} = R) ->
    case gen_tcp:send(Sock, <<"HTTP/1.1 100 Continue\r\n\r\n">>) of
        ok -> erlpy_http_body:continued(Pump), {ok, R#{expect := false}};
        Error -> Error
    end;
respond(read_started, R) ->
    {ok, R};
respond({headers, Status, Headers}, R) ->
    {ok, start_response(Status, Headers, R)};
respond({body, _Chunk}, #{head := true} = R) ->
    {ok, R};
respond({body, Chunk}, #{sock := Sock, pending := Pending} = R) ->
    {Data, R2} = frame(Chunk, R),
    case gen_tcp:send(Sock, [Pending, Data]) of
        ok -> {ok, R2#{pending := [], sent := true, bytes := maps:get(bytes, R2) + byte_size(Chunk)}};
        Error -> Error
    end.

start_response(Status, AppHeaders, #{version := Version, keep_alive := KA0, head := Head} = R) ->
    Code = status_code(Status),
    Lowered = [{lower(N), N, V} || {N, V} <- AppHeaders],
    %% Answered before the app asked for the body of an `Expect:
    %% 100-continue' request: the client may never send it, so the body's
    %% end cannot be found; the connection closes after this response.
    %% The app's own `Connection: close' makes it the last one too.
    KA = KA0 andalso not maps:get(expect, R)
        andalso not has_token(<<"connection">>, <<"close">>, [{L, V} || {L, _, V} <- Lowered]),
    %% The app's hop-by-hop fields are dropped (the framing and the
    %% connection are the server's), so is any Date after its first.
    Headers = first_only(<<"date">>, [H || {L, _, _} = H <- Lowered, not hop_by_hop(L)]),
    %% The app's length: one value of digits (SP/HTAB around it allowed).
    Length = case lists:usort([trim(V) || {<<"content-length">>, _, V} <- Headers]) of
                 [] -> none;
                 [CL] -> case is_digits(CL) of true -> binary_to_integer(CL); false -> bad end;
                 [_, _ | _] -> bad
             end,
    {Framing, Left, KA2, Extra} =
        if
            %% Never a body (RFC 9110 6.4.1): whatever the app sends is cut.
            Code < 200; Code =:= 204; Code =:= 304 -> {length, 0, KA, []};
            %% For HEAD, the length the body would have; none is sent.
            is_integer(Length) -> {length, Length, KA, []};
            %% A bad length from the app: deliver, then close.
            Length =:= bad -> {close, infinity, false, []};
            Head -> {length, 0, KA, []};
            Version =:= {1, 1} -> {chunked, infinity, KA, [{<<"Transfer-Encoding">>, <<"chunked">>}]};
            true -> {close, infinity, false, []}
        end,
    Conn = case {Version, KA2} of
               {_, false} -> [{<<"Connection">>, <<"close">>}];
               {{1, 0}, true} -> [{<<"Connection">>, <<"keep-alive">>}];
               _ -> []
           end,
    %% The app's Content-Length goes out once, if valid, never in a 1xx or
    %% 204 (RFC 9110 8.6).
    Sent = [{N, V} || {_, N, V} <- case is_integer(Length) andalso Code >= 200 andalso Code =/= 204 of
                                      true -> first_only(<<"content-length">>, Headers);
                                      false -> [H || {L, _, _} = H <- Headers, L =/= <<"content-length">>]
                                  end],
    Date = case lists:keymember(<<"date">>, 1, Headers) of
               true -> [];
               false -> [http_date()]
           end,
    Head1 = [<<"HTTP/1.1 ">>, Status, ?CRLF,
             [[N, <<": ">>, V, ?CRLF] || {N, V} <- Sent ++ Extra ++ Conn ++ Date], ?CRLF],
    R#{status := Code, framing := Framing, left := Left, keep_alive := KA2, pending := Head1}.

%% Hop-by-hop fields (RFC 9110 7.6.1): gunicorn's list (wsgiref's, from
%% RFC 2616 13.5.1) and the Proxy-Connection, Trailer of RFC 9110 7.6.
hop_by_hop(<<"connection">>) -> true;
hop_by_hop(<<"keep-alive">>) -> true;
hop_by_hop(<<"proxy-connection">>) -> true;
hop_by_hop(<<"proxy-authenticate">>) -> true;
hop_by_hop(<<"proxy-authorization">>) -> true;
hop_by_hop(<<"te">>) -> true;
hop_by_hop(<<"trailer">>) -> true;
hop_by_hop(<<"trailers">>) -> true;
hop_by_hop(<<"transfer-encoding">>) -> true;
hop_by_hop(<<"upgrade">>) -> true;
hop_by_hop(_) -> false.

%% The app's first field of that (lowercase) name, if it sent more than one.
first_only(Name, [{Name, _, _} = First | Rest]) -> [First | [H || {L, _, _} = H <- Rest, L =/= Name]];
first_only(Name, [H | Rest]) -> [H | first_only(Name, Rest)];
first_only(_Name, []) -> [].

frame(Chunk, #{framing := chunked} = R) ->
    {[integer_to_binary(byte_size(Chunk), 16), ?CRLF, Chunk, ?CRLF], R};
frame(Chunk, #{framing := length, left := Left} = R) ->
    %% An app sending more than its Content-Length: cut, and close after.
    case byte_size(Chunk) =< Left of
        true -> {Chunk, R#{left := Left - byte_size(Chunk)}};
        false -> {binary:part(Chunk, 0, Left), R#{left := 0, keep_alive := false}}
    end;
frame(Chunk, R) ->
    {Chunk, R}.

%% After the app: complete the response, or answer the failure.
finish(ok, #{sock := Sock, pending := Pending, framing := Framing, left := Left} = R, _Pump) ->
    Tail = case Framing of chunked -> <<"0\r\n\r\n">>; _ -> <<>> end,
    Sent = case {Pending, Tail} of
               {[], <<>>} -> ok;
               _ -> gen_tcp:send(Sock, [Pending, Tail])
           end,
    case Sent of
        ok when Framing =:= length, Left > 0, not map_get(head, R) ->
            R#{keep_alive := false};  %% shorter than its Content-Length
        ok -> R;
        {error, _} -> R#{keep_alive := false}
    end;
finish({error, client_closed}, R, _Pump) ->
    R#{keep_alive := false};
finish({error, busy}, #{sock := Sock} = R, _Pump) ->
    %% Over max_workers with max_waiting requests waiting already.
    _ = gen_tcp:send(Sock, busy_response(maps:get(head, R))),
    R#{keep_alive := false, status := 503};
finish({error, {app_error, Reason}, Sent}, #{sock := Sock} = R, Pump) ->
    BodyError = erlpy_http_body:error(Pump),
    log_app_error(Reason, BodyError),
    case Sent orelse map_get(sent, R) of
        true ->
            R#{keep_alive := false};
        false ->
            {Code, Why} = body_error_status(BodyError),
            Method = case map_get(head, R) of true -> <<"HEAD">>; false -> none end,
            _ = gen_tcp:send(Sock, simple_response(Code, Why, close, Method)),
            R#{keep_alive := false, status := Code}
    end.

log_app_error({python, Type, Msg, Tb}, BodyError) when BodyError =:= none ->
    ?LOG_ERROR("Python app raised ~ts: ~ts~n~ts", [Type, Msg, Tb]);
log_app_error(Reason, BodyError) ->
    ?LOG_WARNING("WSGI request failed: ~p (request body: ~p)", [Reason, BodyError]).

fail(S, Status, Why) ->
    fail(S, Status, Why, none).

%% Answers a request the server refuses (the method when it is known: a
%% response to HEAD has no body).
fail(#{socket := Sock}, Status, Why, Method) ->
    _ = gen_tcp:send(Sock, simple_response(Status, Why, close, Method)),
    lingering_close(Sock).

%% Closing with unread request bytes makes the kernel reset the connection,
%% which can destroy the error response before the client reads it: stop
%% sending, then read and drop what the client still sends, for a moment.
lingering_close(Sock) ->
    _ = gen_tcp:shutdown(Sock, write),
    _ = inet:setopts(Sock, [{active, false}]),
    Deadline = erlang:monotonic_time(millisecond) + ?LINGER_MAX,
    linger(Sock, Deadline, 16 bsl 20).

%% Until the client has been quiet for ?LINGER_QUIET ms (not a fixed time
%% from the close: a client still sending a big body on a busy machine
%% would be reset part way), at most ?LINGER_MAX ms and 16 MiB in all.
linger(Sock, Deadline, Budget) ->
    Left = min(?LINGER_QUIET, Deadline - erlang:monotonic_time(millisecond)),
    case Left > 0 andalso Budget > 0 andalso gen_tcp:recv(Sock, 0, Left) of
        {ok, Data} -> linger(Sock, Deadline, Budget - byte_size(Data));
        _ -> gen_tcp:close(Sock)
    end.

simple_response(Code, Why, close) ->
    simple_response(Code, Why, close, none).

%% A response the server makes itself; it has a Date, as every response
%% from a server with a clock (RFC 9110 6.6.1).
simple_response(Code, Why, close, Method) ->
    Body = <<Why/binary, "\n">>,
    {_, Date} = http_date(),
    [<<"HTTP/1.1 ">>, integer_to_binary(Code), $\s, reason(Code), ?CRLF,
     <<"Date: ">>, Date, ?CRLF,
     <<"Content-Type: text/plain\r\nConnection: close\r\nContent-Length: ">>,
     integer_to_binary(byte_size(Body)), ?CRLF, ?CRLF,
     case Method of <<"HEAD">> -> <<>>; _ -> Body end].

%% 503 for a request over max_workers with max_waiting waiting already.
busy_response(Head) ->
    Body = <<"server busy, retry later\n">>,
    {_, Date} = http_date(),
    [<<"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nDate: ">>, Date, ?CRLF,
     <<"Content-Type: text/plain\r\nConnection: close\r\nContent-Length: ">>,
     integer_to_binary(byte_size(Body)), ?CRLF, ?CRLF,
     case Head of true -> <<>>; false -> Body end].

reason(400) -> <<"Bad Request">>;
reason(408) -> <<"Request Timeout">>;
reason(413) -> <<"Content Too Large">>;
reason(414) -> <<"URI Too Long">>;
reason(417) -> <<"Expectation Failed">>;
reason(431) -> <<"Request Header Fields Too Large">>;
reason(500) -> <<"Internal Server Error">>;
reason(501) -> <<"Not Implemented">>;
reason(503) -> <<"Service Unavailable">>;
reason(505) -> <<"HTTP Version Not Supported">>.

%% ------------------------------------------------------------------ helpers

method(M) when is_atom(M) -> atom_to_binary(M, latin1);
method(M) -> M.

name(N) when is_atom(N) -> atom_to_binary(N, latin1);
name(N) -> N.

path({abs_path, P}) -> P;
path({absoluteURI, _Scheme, _Host, _Port, P}) -> P;
path('*') -> <<"*">>;
path(_) -> error.

%% RFC 9112 6.1: an HTTP/1.0 request with Transfer-Encoding has faulty
%% framing; it is served, then the connection closes.
keep_alive({1, 1}, Lower, _) -> not has_token(<<"connection">>, <<"close">>, Lower);
keep_alive({1, 0}, _Lower, chunked) -> false;
keep_alive({1, 0}, Lower, _) -> has_token(<<"connection">>, <<"keep-alive">>, Lower);
keep_alive(_, _, _) -> false.

has_token(Name, Token, Lower) ->
    lists:any(fun({N, V}) when N =:= Name ->
                      lists:member(Token, [lower(trim(T)) || T <- binary:split(V, <<",">>, [global])]);
                 (_) -> false
              end, Lower).

%% Request body framing (RFC 9112 6.3): chunked, a length, or none.
framing(Lower, #{conf := #{max_body := Max}}) ->
    TE = [V || {<<"transfer-encoding">>, V} <- Lower],
    CL = lists:usort([trim(V) || {<<"content-length">>, V} <- Lower]),
    case {TE, CL} of
        {[], []} -> {ok, none};
        {[_ | _], [_ | _]} -> {error, 400, <<"both Transfer-Encoding and Content-Length">>};
        {[_ | _], []} ->
            Codings = [lower(trim(C))
                       || V <- TE, C <- binary:split(V, <<",">>, [global])],
            case lists:reverse(Codings) of
                [<<"chunked">>] -> {ok, chunked};
                %% Other codings (gzip...) would reach the app still encoded.
                [<<"chunked">> | _] -> {error, 501, <<"unsupported transfer coding">>};
                %% RFC 9112 6.3: the length of such a body is unknowable.
                _ -> {error, 400, <<"chunked is not the final transfer coding">>}
            end;
        {[], [V]} ->
            case is_digits(V) of
                false -> {error, 400, <<"bad Content-Length">>};
                true ->
                    N = binary_to_integer(V),
                    case N > 16#7fffffffffffffff orelse (Max =/= infinity andalso N > Max) of
                        true -> {error, 413, <<"request body too large">>};
                        false -> {ok, {length, N}}
                    end
            end;
        {[], _} -> {error, 400, <<"conflicting Content-Length">>}
    end.

%% @doc ASCII lower case.  Header names and the tokens compared here are
%% ASCII: no need for the Unicode case mapping of string:lowercase/1,
%% which costs more.
-spec lower(binary()) -> binary().
lower(B) ->
    << <<(if C >= $A, C =< $Z -> C + 32; true -> C end)>> || <<C>> <= B >>.

%% @doc Removes the optional whitespace (SP, HTAB) around a field value or
%% list item.  Field values are bytes, not UTF-8 (obs-text is any byte
%% from 0x80): never `string:' functions on them, they raise on invalid
%% UTF-8.
-spec trim(binary()) -> binary().
trim(B) ->
    trim_trailing(trim_leading(B)).

trim_leading(<<C, Rest/binary>>) when C =:= $\s; C =:= $\t -> trim_leading(Rest);
trim_leading(B) -> B.

trim_trailing(B) ->
    case byte_size(B) of
        0 -> B;
        N ->
            case binary:last(B) of
                C when C =:= $\s; C =:= $\t -> trim_trailing(binary:part(B, 0, N - 1));
                _ -> B
            end
    end.

is_digits(<<>>) -> false;
is_digits(B) -> lists:all(fun(C) -> C >= $0 andalso C =< $9 end, binary_to_list(B)).

%% SERVER_NAME: the host the client asked for, from Host without its
%% port (an IPv6 literal keeps its brackets, RFC 3875 4.1.14); without a
%% Host, the address the client connected to, as gunicorn gives the
%% address it listens on.
server_name(Lower, Sock) ->
    case lists:keyfind(<<"host">>, 1, Lower) of
        {_, Host} -> host_name(trim(Host), Sock);
        false -> local_name(Sock)
    end.

host_name(<<>>, Sock) ->
    local_name(Sock);
host_name(<<$[, _/binary>> = Host, _Sock) ->
    case binary:match(Host, <<"]">>) of
        {End, 1} -> binary:part(Host, 0, End + 1);
        nomatch -> Host
    end;
host_name(Host, _Sock) ->
    hd(binary:split(Host, <<":">>)).

local_name(Sock) ->
    case inet:sockname(Sock) of
        {ok, {Addr, _}} when tuple_size(Addr) =:= 8 -> iolist_to_binary(["[", inet:ntoa(Addr), "]"]);
        {ok, {Addr, _}} -> list_to_binary(inet:ntoa(Addr));
        _ -> <<"localhost">>
    end.

status_code(<<A, B, C, _/binary>>) when A >= $1, A =< $5, B >= $0, B =< $9, C >= $0, C =< $9 ->
    (A - $0) * 100 + (B - $0) * 10 + (C - $0);
status_code(_) ->
    500.

stopping() ->
    receive {erlpy_http, stop} -> true after 0 -> false end.

%% The Date header (RFC 9110 5.6.7), computed once a second per connection.
http_date() ->
    Now = erlang:system_time(second),
    case get(erlpy_http_date) of
        {Now, Value} ->
            {<<"Date">>, Value};
        _ ->
            {{Y, Mo, D}, {H, Mi, Se}} = calendar:system_time_to_universal_time(Now, second),
            Day = element(calendar:day_of_the_week(Y, Mo, D), {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}),
            Month = element(Mo, {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}),
            Value = iolist_to_binary(io_lib:format("~s, ~2..0b ~s ~b ~2..0b:~2..0b:~2..0b GMT",
                                                   [Day, D, Month, Y, H, Mi, Se])),
            put(erlpy_http_date, {Now, Value}),
            {<<"Date">>, Value}
    end.
