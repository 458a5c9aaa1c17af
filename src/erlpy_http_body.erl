%% @private
%% @doc The request body pump: a process that reads a request body off the
%% socket (Content-Length or chunked) and writes it into the py_buffer the
%% app reads, with the buffer's backpressure.  It creates the buffer, so if
%% it dies the app's read raises instead of seeing a short body.
-module(erlpy_http_body).

-export([start/3, error/1, drained/3]).

-define(READ, 65536).

-type framing() :: none | chunked | {length, non_neg_integer()}.
-type pump() :: pid() | none.
-export_type([framing/0, pump/0]).

%% @doc The body's buffer and the pump filling it (`none' without a body).
-spec start(gen_tcp:socket(), framing(), map()) -> {py_buffer:buffer(), pump()}.
start(_Sock, none, _Conf) ->
    {ok, Buf} = py_buffer:new(0),
    ok = py_buffer:close(Buf),
    {Buf, none};
start(Sock, Framing, #{max_unread := MaxUnread} = Conf) ->
    ok = inet:setopts(Sock, [{packet, raw}]),
    Conn = self(),
    Length = case Framing of {length, N} -> N; chunked -> undefined end,
    Pump = spawn_link(fun() ->
                              {ok, Buf} = py_buffer:new(#{content_length => Length,
                                                          max_unread => MaxUnread,
                                                          keep_consumed => false}),
                              Conn ! {?MODULE, self(), Buf},
                              run(Sock, Framing, Buf, Conn, Conf)
                      end),
    receive {?MODULE, Pump, Buf} -> {Buf, Pump} end.

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

%% @doc After the response: true when the body has been read to its end
%% (reading and discarding at most `max_drain' unread bytes, within
%% `body_timeout'), so the connection can carry another request.
-spec drained(pump(), py_buffer:buffer(), map()) -> boolean().
drained(none, _Buf, _Conf) ->
    true;
drained(Pump, Buf, #{body_timeout := Timeout}) ->
    receive
        {?MODULE, Pump, Result} -> Result =:= ok
    after 0 ->
            %% The app is done with the body: the pump discards the rest.
            ok = py_buffer:abort(Buf, response_complete),
            receive
                {?MODULE, Pump, Result} -> Result =:= ok
            after Timeout ->
                    unlink(Pump),
                    exit(Pump, kill),
                    false
            end
    end.

%% ------------------------------------------------------------------ the pump

run(Sock, Framing, Buf, Conn, Conf) ->
    St = #{sock => Sock, buf => Buf, conf => Conf, discarding => false, discarded => 0, total => 0},
    Result = try
                 _ = case Framing of
                         {length, N} -> copy(N, St);
                         chunked -> chunks(St)
                     end,
                 ok
             catch
                 throw:{body_error, Reason} -> {error, Reason}
             end,
    %% Tell the connection before the app can see the abort.
    Conn ! {?MODULE, self(), Result},
    case Result of
        ok -> py_buffer:close(Buf);
        {error, closed} -> py_buffer:abort(Buf, client_disconnected);
        {error, Reason2} -> py_buffer:abort(Buf, Reason2)
    end.

copy(0, St) ->
    St;
copy(N, #{sock := Sock, conf := #{body_timeout := Timeout}} = St) ->
    case gen_tcp:recv(Sock, min(N, ?READ), Timeout) of
        {ok, Data} -> copy(N - byte_size(Data), put_data(Data, St));
        {error, Reason} -> throw({body_error, Reason})
    end.

put_data(Data, #{discarding := true, discarded := D, conf := #{max_drain := Max}} = St) ->
    D2 = D + byte_size(Data),
    D2 > Max andalso throw({body_error, drain_limit}),
    St#{discarded := D2};
put_data(Data, #{buf := Buf} = St) ->
    case py_buffer:write(Buf, Data) of
        ok -> St;
        {error, closed} -> put_data(Data, St#{discarding := true});
        {error, Reason} -> throw({body_error, Reason})
    end.

chunks(#{sock := Sock, conf := #{body_timeout := Timeout, max_body := Max}, total := Total} = St) ->
    ok = inet:setopts(Sock, [{packet, line}]),
    Line = recv(Sock, 0, Timeout),
    ok = inet:setopts(Sock, [{packet, raw}]),
    case chunk_size(Line) of
        0 ->
            trailers(Sock, Timeout),
            St;
        Size when Max =/= infinity, Total + Size > Max ->
            throw({body_error, too_large});
        Size ->
            St2 = copy(Size, St#{total := Total + Size}),
            <<"\r\n">> =:= recv(Sock, 2, Timeout) orelse throw({body_error, bad_chunk}),
            chunks(St2)
    end.

%% Trailer fields are read and dropped, up to the empty line.
trailers(Sock, Timeout) ->
    ok = inet:setopts(Sock, [{packet, line}]),
    Line = recv(Sock, 0, Timeout),
    ok = inet:setopts(Sock, [{packet, raw}]),
    case Line of
        <<"\r\n">> -> ok;
        <<"\n">> -> ok;
        _ -> trailers(Sock, Timeout)
    end.

recv(Sock, N, Timeout) ->
    case gen_tcp:recv(Sock, N, Timeout) of
        {ok, Data} -> Data;
        {error, emsgsize} -> throw({body_error, bad_chunk});
        {error, Reason} -> throw({body_error, Reason})
    end.

%% "1a3f;ext=1\r\n" -> 16#1a3f
chunk_size(Line) ->
    Hex = string:trim(hd(binary:split(Line, [<<";">>, <<"\r">>, <<"\n">>]))),
    case Hex =/= <<>> andalso byte_size(Hex) =< 15 andalso
        lists:all(fun(C) -> (C >= $0 andalso C =< $9) orelse (C >= $a andalso C =< $f)
                                orelse (C >= $A andalso C =< $F) end, binary_to_list(Hex)) of
        true -> binary_to_integer(Hex, 16);
        false -> throw({body_error, bad_chunk})
    end.
