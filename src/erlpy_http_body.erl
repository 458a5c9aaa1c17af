%% @private
%% @doc The request body pump: a process that reads a request body off the
%% socket (Content-Length or chunked) and writes it into the py_buffer the
%% app reads, with the buffer's backpressure.  It creates the buffer, so if
%% it dies the app's read raises instead of seeing a short body.
%%
%% The pump receives whatever the socket has (one receive per arrival, never
%% a wait for a fixed count), parses chunked framing itself, and hands back
%% the bytes it received past the body's end: the start of a pipelined
%% request, which the connection parses next.
%%
%% A small body (`buffer_body': a Content-Length up to it, or a chunked body
%% that ends within it) is read whole before the app starts (`buffered/1'),
%% so a client trickling it holds two processes, not a Python worker.
-module(erlpy_http_body).

-export([start/4, buffered/1, error/1, drained/3, continued/1, stop/1]).

%% Trailer section and chunk-size line (with extensions) bounds.
-define(MAX_CHUNK_LINE, 4096).

-type framing() :: none | chunked | {length, non_neg_integer()}.
-type pump() :: pid() | none.
-export_type([framing/0, pump/0]).

%% @doc Starts reading a body.  `Received' are the bytes that came with the
%% request head.  Returns the body's buffer and the pump filling it (both
%% `none' without a body: the app gets an empty input, and nothing is made
%% for it) and the bytes the connection keeps (all of `Received' without a
%% body: they belong to the next request).  With `Expect' (the
%% client waits for `100 Continue'), waiting for the client counts against
%% `body_timeout' and `min_body_rate' only after `continued/1' or the first
%% body byte.
-spec start(gen_tcp:socket(), framing(), binary(), map()) ->
          {py_buffer:buffer() | none, pump(), binary()}.
start(_Sock, none, Received, _Conf) ->
    {none, none, Received};
start(Sock, Framing, Received, #{max_unread := MaxUnread, expect := Expect} = Conf) ->
    %% Body bytes sent with the head: the client did not wait for the 100.
    Expecting = Expect andalso Received =:= <<>>,
    Conn = self(),
    Length = case Framing of {length, N} -> N; chunked -> undefined end,
    %% Up to buffer_body bytes are written before the app reads: they must
    %% fit in the buffer without waiting.
    Small = maps:get(buffer_body, Conf, 0),
    Pump = spawn_link(fun() ->
                              {ok, Buf} = py_buffer:new(#{content_length => Length,
                                                          max_unread => max(MaxUnread, Small),
                                                          keep_consumed => false}),
                              Conn ! {?MODULE, self(), Buf},
                              run(Sock, Framing, Buf, Received, Expecting, Conn, Conf)
                      end),
    receive {?MODULE, Pump, Buf} -> {Buf, Pump, <<>>} end.

%% @doc For a body that may be small (a Content-Length up to `buffer_body',
%% or chunked when `buffer_body' is not 0), called once before the app
%% starts: waits until the body has been read whole (`ok'), has failed
%% (`{error, Reason}': the app need not run), or, chunked, grew past
%% `buffer_body' (`streaming': the app reads the rest as it comes).
-spec buffered(pump()) -> ok | streaming | {error, atom()}.
buffered(none) ->
    ok;
buffered(Pump) ->
    receive
        {?MODULE, Pump, streaming} ->
            streaming;
        {?MODULE, Pump, Result} = Msg ->
            self() ! Msg, %% kept for drained/3 and error/1
            case Result of
                {ok, _} -> ok;
                {error, _} = Error -> Error
            end
    end.

%% @doc The connection sent `100 Continue': from now on the client is late
%% if the body does not come.
-spec continued(pump()) -> ok.
continued(none) ->
    ok;
continued(Pump) ->
    Pump ! {?MODULE, continued},
    ok.

%% @doc Stops the pump at once (the connection is closing).
-spec stop(pump()) -> ok.
stop(none) ->
    ok;
stop(Pump) ->
    unlink(Pump),
    exit(Pump, kill),
    ok.

%% @doc Why the body failed, if it did and the pump said so already.
-spec error(pump()) -> none | too_large | bad_chunk | timeout | closed.
error(none) ->
    none;
error(Pump) ->
    receive
        {?MODULE, Pump, {error, Reason}} = Msg ->
            self() ! Msg, %% keep it for drained/3
            Reason
    after 0 ->
            none
    end.

%% @doc After the response: `{ok, Rest}' when the body has been read to its
%% end (reading and discarding at most `max_drain' unread bytes, within
%% `body_timeout'), with the bytes received past it; `error' when the
%% connection cannot carry another request.
-spec drained(pump(), py_buffer:buffer() | none, map()) -> {ok, binary()} | error.
drained(none, _Buf, _Conf) ->
    {ok, <<>>};
drained(Pump, Buf, #{body_timeout := Timeout, max_drain := MaxDrain}) ->
    receive
        {?MODULE, Pump, Result} -> outcome(Result)
    after 0 ->
            case py_buffer:info(Buf) of
                %% More left than may be drained: no use waiting for it.
                #{content_length := Length, written := Written}
                  when is_integer(Length), Length - Written > MaxDrain ->
                    throw_away(Pump);
                _ ->
                    %% The app is done with the body: the pump discards the rest.
                    ok = py_buffer:abort(Buf, response_complete),
                    receive
                        {?MODULE, Pump, Result} -> outcome(Result)
                    after Timeout ->
                            throw_away(Pump)
                    end
            end
    end.

throw_away(Pump) ->
    stop(Pump),
    error.

outcome({ok, Rest}) -> {ok, Rest};
outcome({error, _}) -> error.

%% ------------------------------------------------------------------ the pump

run(Sock, Framing, Buf, Received, Expecting, Conn, #{body_timeout := Timeout} = Conf) ->
    Small = maps:get(buffer_body, Conf, 0),
    %% A chunked body past this many bytes is streamed: the connection,
    %% waiting in buffered/1, is told so.
    Until = case Framing of
                chunked when Small > 0 -> Small;
                _ -> none
            end,
    St = #{sock => Sock, buf => Buf, conf => Conf, data => Received, discarding => false,
           discarded => 0, total => 0, received => byte_size(Received), waited => 0,
           min_rate => maps:get(min_body_rate, Conf, 0), timeout => Timeout,
           expecting => Expecting, conn => Conn, until => Until, written => 0},
    Result = try
                 #{data := Rest} = case Framing of
                                       {length, N} -> copy(N, St);
                                       chunked -> chunks(St)
                                   end,
                 {ok, Rest}
             catch
                 throw:{body_error, Reason} -> {error, Reason}
             end,
    %% Tell the connection before the app can see the abort.
    Conn ! {?MODULE, self(), Result},
    case Result of
        {ok, _} -> py_buffer:close(Buf);
        {error, closed} -> py_buffer:abort(Buf, client_disconnected);
        {error, Reason2} -> py_buffer:abort(Buf, Reason2)
    end.

%% N more body bytes: first those already received, then from the socket.
copy(0, St) ->
    St;
copy(N, #{data := <<>>} = St) ->
    copy(N, more(St));
copy(N, #{data := Data} = St) when byte_size(Data) =< N ->
    copy(N - byte_size(Data), put_data(Data, St#{data := <<>>}));
copy(N, #{data := Data} = St) ->
    <<Part:N/binary, Rest/binary>> = Data,
    put_data(Part, St#{data := Rest}).

%% Receives what the socket has.  Time spent waiting for the client is
%% budgeted: `body_timeout' per wait, and in all no more than
%% `body_timeout' plus one second per `min_body_rate' bytes received, so
%% a client trickling its body cannot hold a Python worker for long.  While
%% an `Expect: 100-continue' client has not been asked for the body, its
%% silence is not counted.
more(#{sock := Sock, data := Data, timeout := Timeout, received := Got, waited := Waited,
       min_rate := Rate, expecting := Expecting} = St) ->
    Wait = if
               Expecting; Timeout =:= infinity; Rate =:= 0 -> Timeout;
               true -> min(Timeout, Timeout + Got * 1000 div Rate - Waited)
           end,
    Wait =:= infinity orelse Wait > 0 orelse throw({body_error, timeout}),
    T0 = erlang:monotonic_time(millisecond),
    case gen_tcp:recv(Sock, 0, Wait) of
        {ok, New} ->
            Data2 = case Data of <<>> -> New; _ -> <<Data/binary, New/binary>> end,
            Waited2 = case Expecting of
                          true -> Waited;
                          false -> Waited + erlang:monotonic_time(millisecond) - T0
                      end,
            St#{data := Data2, received := Got + byte_size(New), waited := Waited2, expecting := false};
        {error, timeout} when Expecting ->
            receive
                {?MODULE, continued} -> more(St#{expecting := false})
            after 0 ->
                    more(St)
            end;
        {error, Reason} ->
            throw({body_error, Reason})
    end.

put_data(Data, #{discarding := true, discarded := D, conf := #{max_drain := Max}} = St) ->
    D2 = D + byte_size(Data),
    D2 > Max andalso throw({body_error, drain_limit}),
    St#{discarded := D2};
put_data(Data, #{until := Until, written := Written, conn := Conn} = St)
  when is_integer(Until), Written + byte_size(Data) > Until ->
    %% Before the write: past buffer_body it may wait for the app to read.
    Conn ! {?MODULE, self(), streaming},
    put_data(Data, St#{until := none});
put_data(Data, #{buf := Buf, written := Written} = St) ->
    case py_buffer:write(Buf, Data) of
        ok -> St#{written := Written + byte_size(Data)};
        {error, closed} -> put_data(Data, St#{discarding := true});
        {error, Reason} -> throw({body_error, Reason})
    end.

%% Chunked framing (RFC 9112 7.1): size line, data, CRLF; a zero size ends
%% the body, then trailer fields up to an empty line.
chunks(#{conf := #{max_body := Max}, total := Total} = St) ->
    {Line, St2} = line(St),
    case chunk_size(Line) of
        0 ->
            trailers(St2, 0);
        Size when Max =/= infinity, Total + Size > Max ->
            throw({body_error, too_large});
        Size ->
            St3 = crlf(copy(Size, St2#{total := Total + Size})),
            chunks(St3)
    end.

crlf(#{data := <<"\r\n", Rest/binary>>} = St) ->
    St#{data := Rest};
crlf(#{data := Data} = St) when byte_size(Data) < 2 ->
    crlf(more(St));
crlf(_St) ->
    throw({body_error, bad_chunk}).

%% Trailer fields are read and dropped, up to the empty line.
trailers(St, Size) ->
    Size > ?MAX_CHUNK_LINE andalso throw({body_error, bad_chunk}),
    case line(St) of
        {<<>>, St2} -> St2;
        {Line, St2} -> trailers(St2, Size + byte_size(Line))
    end.

%% One line (without its CRLF or LF), receiving more as needed.
line(#{data := Data} = St) ->
    case binary:match(Data, <<"\n">>) of
        {Pos, 1} when Pos > ?MAX_CHUNK_LINE ->
            throw({body_error, bad_chunk});
        {Pos, 1} ->
            <<Line0:Pos/binary, $\n, Rest/binary>> = Data,
            Line = case Line0 of
                       <<L:(Pos - 1)/binary, $\r>> -> L;
                       _ -> Line0
                   end,
            {Line, St#{data := Rest}};
        nomatch when byte_size(Data) > ?MAX_CHUNK_LINE ->
            throw({body_error, bad_chunk});
        nomatch ->
            line(more(St))
    end.

%% "1a3f;ext=1" -> 16#1a3f: 1 to 15 hex digits, then the end of the line
%% or (after optional whitespace) extensions, which are ignored.
chunk_size(Line) ->
    chunk_size(Line, 0, 0).

chunk_size(<<C, Rest/binary>>, N, Digits) when Digits < 15 ->
    case C of
        _ when C >= $0, C =< $9 -> chunk_size(Rest, N * 16 + C - $0, Digits + 1);
        _ when C >= $a, C =< $f -> chunk_size(Rest, N * 16 + C - $a + 10, Digits + 1);
        _ when C >= $A, C =< $F -> chunk_size(Rest, N * 16 + C - $A + 10, Digits + 1);
        _ when Digits > 0 -> chunk_ext(<<C, Rest/binary>>, N);
        _ -> throw({body_error, bad_chunk})
    end;
chunk_size(<<>>, N, Digits) when Digits > 0 ->
    N;
chunk_size(_, _, _) ->
    throw({body_error, bad_chunk}).

chunk_ext(<<C, Rest/binary>>, N) when C =:= $\s; C =:= $\t -> chunk_ext(Rest, N);
chunk_ext(<<$;, _/binary>>, N) -> N;
chunk_ext(<<>>, N) -> N;
chunk_ext(_, _) -> throw({body_error, bad_chunk}).
