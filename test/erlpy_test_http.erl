%% An HTTP/1.1 client for the HTTP suites: raw exchanges over TCP and a
%% strict parser of what comes back, so a test sees the bytes on the wire
%% (a client library would forgive or hide them).
-module(erlpy_test_http).
-export([exchange/2, exchange/3, responses/2, method/1, recv_all/2]).

%% @doc Connects to 127.0.0.1:Port, sends the pieces (separate sends),
%% half-closes and reads to the end: `{ok, closed | reset, Bytes}'.
exchange(Port, Pieces) ->
    exchange(Port, Pieces, #{}).

%% @doc Options: `ip' (default 127.0.0.1), `half_close' (default true:
%% false keeps sending open, so the server's own timeouts can be seen).
exchange(Port, Pieces, Opts) ->
    Ip = maps:get(ip, Opts, {127, 0, 0, 1}),
    {ok, S} = gen_tcp:connect(Ip, Port, [binary, {active, false}, {nodelay, true}]),
    %% The server may answer and close before everything is sent.
    _ = lists:foldl(fun(P, ok) -> gen_tcp:send(S, P); (_, Error) -> Error end, ok, Pieces),
    _ = maps:get(half_close, Opts, true) andalso gen_tcp:shutdown(S, write),
    Result = recv_all(S, <<>>),
    gen_tcp:close(S),
    Result.

%% @doc To the end of the stream: a close, or a reset after the server
%% closed with request bytes unread (what arrived before must still parse).
-spec recv_all(gen_tcp:socket(), binary()) -> {ok, closed | reset, binary()} | {term(), binary()}.
recv_all(S, Acc) ->
    case gen_tcp:recv(S, 0, 15000) of
        {ok, Data} -> recv_all(S, <<Acc/binary, Data/binary>>);
        {error, closed} -> {ok, closed, Acc};
        {error, econnreset} -> {ok, reset, Acc};
        {error, Reason} -> {Reason, Acc}
    end.

%% @doc The request method as the server sees it (the response to HEAD has no body).
method(Bytes) ->
    case binary:split(skip_blank(Bytes), [<<" ">>, <<"\t">>]) of
        [M, _] -> M;
        _ -> <<>>
    end.

skip_blank(<<"\r\n", Rest/binary>>) -> skip_blank(Rest);
skip_blank(<<"\n", Rest/binary>>) -> skip_blank(Rest);
skip_blank(B) -> B.

%% ------------------------------------------------------------------ the response parser

%% @doc Parses what a server sent, strictly: RFC 9112 status lines and
%% fields; each body framed by Transfer-Encoding: chunked, Content-Length
%% or the close; exactly one Date and at most one Transfer-Encoding in
%% each final response; nothing after a response with `Connection: close'.
%% `Methods' are those of the requests answered, in order (a response to
%% HEAD has no body).  `{ok, [{Status, Headers, Body}]}' (interim 1xx
%% responses skipped, header names lowercase) or `{error, Why}'.
responses(Bytes, Methods) ->
    parse_responses(Bytes, Methods, []).

parse_responses(<<>>, _Methods, Acc) ->
    {ok, lists:reverse(Acc)};
parse_responses(Bytes, Methods, Acc) ->
    {Method, MoreMethods} = case Methods of
                                [M | Ms] -> {M, Ms};
                                [] -> {<<"GET">>, []}
                            end,
    case response(Bytes, Method) of
        {interim, Rest} ->
            parse_responses(Rest, Methods, Acc);
        {ok, {_, Headers, _} = Response, Rest} ->
            Close = lists:member(<<"close">>, [V || {<<"connection">>, V} <- Headers]),
            case Close andalso Rest =/= <<>> of
                true -> {error, {bytes_after_close, Rest, lists:reverse([Response | Acc])}};
                false -> parse_responses(Rest, MoreMethods, [Response | Acc])
            end;
        {error, Why} ->
            {error, {Why, Bytes, lists:reverse(Acc)}}
    end.

response(Bytes, Method) ->
    maybe_response(status_line(Bytes), Method).

maybe_response({ok, Code, Rest}, Method) ->
    case fields(Rest, []) of
        {ok, _, Rest2} when Code < 200 ->
            {interim, Rest2};
        {ok, Headers, Rest2} ->
            Dates = [V || {<<"date">>, V} <- Headers],
            TEs = [V || {<<"transfer-encoding">>, V} <- Headers],
            CLs = [V || {<<"content-length">>, V} <- Headers],
            if
                length(Dates) =/= 1 -> {error, {dates, Dates}};
                TEs =/= [], TEs =/= [<<"chunked">>] -> {error, {transfer_encoding, TEs}};
                TEs =/= [], CLs =/= [] -> {error, both_te_and_cl};
                length(CLs) > 1 -> {error, {content_lengths, CLs}};
                true ->
                    case body(Code, Method, TEs, CLs, Rest2) of
                        {ok, Body, Rest3} -> {ok, {Code, Headers, Body}, Rest3};
                        Error -> Error
                    end
            end;
        Error ->
            Error
    end;
maybe_response(Error, _Method) ->
    Error.

status_line(<<"HTTP/1.1 ", A, B, C, " ", Rest/binary>>)
  when A >= $1, A =< $5, B >= $0, B =< $9, C >= $0, C =< $9 ->
    case line(Rest) of
        {ok, Reason, Rest2} ->
            case lists:all(fun field_byte/1, binary_to_list(Reason)) of
                true -> {ok, list_to_integer([A, B, C]), Rest2};
                false -> {error, bad_reason}
            end;
        Error -> Error
    end;
status_line(_) ->
    {error, bad_status_line}.

fields(Bytes, Acc) ->
    case line(Bytes) of
        {ok, <<>>, Rest} ->
            {ok, lists:reverse(Acc), Rest};
        {ok, Line, Rest} ->
            case binary:split(Line, <<":">>) of
                [Name, Value0] ->
                    Value = string:trim(Value0, both, " \t"),
                    Token = Name =/= <<>> andalso lists:all(fun token_byte/1, binary_to_list(Name)),
                    Clean = lists:all(fun field_byte/1, binary_to_list(Value)),
                    case Token andalso Clean of
                        true -> fields(Rest, [{string:lowercase(Name), Value} | Acc]);
                        false -> {error, {bad_field, Line}}
                    end;
                _ ->
                    {error, {bad_field, Line}}
            end;
        Error ->
            Error
    end.

line(Bytes) ->
    case binary:split(Bytes, <<"\r\n">>) of
        [Line, Rest] ->
            case binary:match(Line, [<<"\r">>, <<"\n">>]) of
                nomatch -> {ok, Line, Rest};
                _ -> {error, {bare_cr_or_lf, Line}}
            end;
        [_] -> {error, truncated_line}
    end.

%% A request line the server could not parse: it cannot know it was HEAD.
body(Code, <<"HEAD">>, [], [CL], Rest) when Code =:= 400; Code =:= 414 ->
    N = binary_to_integer(CL),
    case Rest of
        <<Body:N/binary>> -> {ok, Body, <<>>};
        _ -> {ok, <<>>, Rest}
    end;
body(Code, Method, _TEs, _CLs, Rest) when Method =:= <<"HEAD">>; Code =:= 204; Code =:= 304 ->
    {ok, <<>>, Rest};
body(_Code, _Method, [<<"chunked">>], [], Rest) ->
    chunks(Rest, <<>>);
body(_Code, _Method, [], [CL], Rest) ->
    N = binary_to_integer(CL),
    case Rest of
        <<Body:N/binary, Rest2/binary>> -> {ok, Body, Rest2};
        _ -> {error, {short_body, N, Rest}}
    end;
body(_Code, _Method, [], [], Rest) ->
    %% Delimited by the close (HTTP/1.0).
    {ok, Rest, <<>>}.

chunks(Bytes, Acc) ->
    case line(Bytes) of
        {ok, SizeLine, Rest} ->
            case catch binary_to_integer(SizeLine, 16) of
                0 ->
                    case Rest of
                        <<"\r\n", Rest2/binary>> -> {ok, Acc, Rest2};
                        _ -> {error, bad_last_chunk}
                    end;
                N when is_integer(N), N > 0 ->
                    case Rest of
                        <<Data:N/binary, "\r\n", Rest2/binary>> -> chunks(Rest2, <<Acc/binary, Data/binary>>);
                        _ -> {error, bad_chunk}
                    end;
                _ ->
                    {error, {bad_chunk_size, SizeLine}}
            end;
        Error ->
            Error
    end.

token_byte(C) ->
    (C >= $a andalso C =< $z) orelse (C >= $A andalso C =< $Z) orelse (C >= $0 andalso C =< $9)
        orelse lists:member(C, "!#$%&'*+-.^_`|~").

%% HTAB, SP, VCHAR, obs-text.
field_byte(C) ->
    C =:= $\t orelse (C >= 16#20 andalso C =/= 16#7f).
