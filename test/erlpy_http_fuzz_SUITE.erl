%% Property-based fuzz of the HTTP/1.1 front door (PropEr): random request
%% heads (methods, targets, versions, header names and values of arbitrary
%% bytes, duplicated and conflicting framing fields, obs-fold, bare LF) and
%% chunked bodies (sizes right and wrong, extensions, trailers, truncation)
%% go to a real server over TCP.  Whatever is sent, no connection process
%% may crash, and the client gets well-formed HTTP/1.1 responses (status
%% line, fields, a body framed as the fields say) or a clean close.
-module(erlpy_http_fuzz_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include_lib("proper/include/proper.hrl").
-compile([export_all, nowarn_export_all]).

%% Runs of each property: together well under a minute.
-define(HEAD_RUNS, 3000).
-define(CHUNKED_RUNS, 2000).
-define(APP_RUNS, 1000).

all() ->
    [non_utf8_framing_header_crashed_conn, request_heads, chunked_bodies, app_responses].

init_per_suite(Config) ->
    Config2 = erlpy_test:start(Config),
    %% Failed bodies and app errors are the point here: not a report
    %% each (crash reports come from proc_lib and the emulator).
    ok = logger:set_module_level(erlpy_http_conn, critical),
    %% Short timeouts: a request the fuzzer cut short ends quickly.
    {ok, Server} = erlpy_http:start(#{app => <<"fuzz_apps:app">>, port => 0, header_timeout => 2000,
                                      body_timeout => 2000, idle_timeout => 2000,
                                      max_body => 4096, access_log => false}),
    %% The crashes seen, in a table that outlives this process.
    Owner = spawn(fun() -> receive stop -> ok end end),
    Crashes = ets:new(fuzz_crashes, [public, bag, {heir, Owner, none}]),
    true = ets:give_away(Crashes, Owner, none),
    ok = logger:add_handler(fuzz_crashes, ?MODULE, #{config => Crashes}),
    [{server, Server}, {port, erlpy_http:port(Server)}, {crashes, Crashes}, {owner, Owner} | Config2].

end_per_suite(Config) ->
    _ = logger:remove_handler(fuzz_crashes),
    ok = logger:unset_module_level(erlpy_http_conn),
    ?config(owner, Config) ! stop,
    erlpy_http:stop(?config(server, Config)),
    erlpy_test:stop(Config).

end_per_testcase(_Case, Config) ->
    %% The server survived and still serves.
    {ok, _, <<"HTTP/1.1 204 ", _/binary>>} = erlpy_test_http:exchange(?config(port, Config),
                                             [<<"GET /empty HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n">>]),
    ?assertEqual([], crashes(Config)).

%% logger handler: keeps the crash of any process (proc_lib's crash
%% report, or the emulator's "Error in process" for a plain one).
log(#{msg := {report, #{label := {proc_lib, crash}} = Report}}, #{config := Tab}) ->
    ets:insert(Tab, {crash, Report});
log(#{msg := {Format, Args}}, #{config := Tab}) when is_list(Format) ->
    case string:find(Format, "Error in process") of
        nomatch -> ok;
        _ -> ets:insert(Tab, {crash, {Format, Args}})
    end;
log(_Event, _Config) ->
    ok.

crashes(Config) ->
    [R || {crash, R} <- ets:tab2list(?config(crashes, Config))].

%% ------------------------------------------------------------------ cases

%% Regression: bytes that are not UTF-8 in Connection, Transfer-Encoding
%% or Content-Length crashed the connection process in string:trim/1,3;
%% the client got a closed socket instead of an answer.
non_utf8_framing_header_crashed_conn(Config) ->
    Port = ?config(port, Config),
    Req = fun(Field) -> [<<"POST /echo HTTP/1.1\r\nHost: x\r\n">>, Field, <<"\r\n\r\n">>] end,
    {ok, [{400, _, _}]} = check(Port, [Req(<<"Content-Length: \xff1">>)]),
    {ok, [{400, _, _}]} = check(Port, [Req(<<"Content-Length: 1 \xe9">>)]),
    {ok, [{400, _, _}]} = check(Port, [Req(<<"Transfer-Encoding: \xffchunked">>)]),
    {ok, [{400, _, _}]} = check(Port, [Req(<<"Transfer-Encoding: chunked, \xc3">>)]),
    {ok, [{200, _, _}]} = check(Port, [Req(<<"Connection: \xff, close">>)]),
    {ok, [{200, H, _}]} = check(Port, [<<"GET /echo HTTP/1.0\r\nConnection: keep-alive\xfe\r\n\r\n">>]),
    ?assertEqual([<<"close">>], [V || {<<"connection">>, V} <- H]),
    ?assertEqual([], crashes(Config)).

request_heads(Config) ->
    Port = ?config(port, Config),
    quickcheck(?FORALL(Req, request(), check_property(Port, Req, Config)), ?HEAD_RUNS).

chunked_bodies(Config) ->
    Port = ?config(port, Config),
    quickcheck(?FORALL(Req, chunked_request(), check_property(Port, Req, Config)), ?CHUNKED_RUNS).

%% The other side: whatever status and headers an app gives (hop-by-hop
%% fields, its own Date, lengths right, short or bad, text beyond
%% ISO-8859-1), the response is well-formed and follows the header rules.
app_responses(Config) ->
    Port = ?config(port, Config),
    quickcheck(?FORALL(Spec, app_response(), check_app_response(Port, Spec, Config)), ?APP_RUNS).

check_app_response(Port, {Request, Methods, Status, Headers, Body} = Spec, Config) ->
    Before = length(crashes(Config)),
    Result = try check(Port, {[Request], Methods}) catch C:R:St -> {error, {C, R, St}} end,
    Verdict = case Result of
                  {ok, [First | More]} -> app_rules(Status, Headers, Body, First, More);
                  _ -> {false, Result}
              end,
    collect(case Result of {ok, Rs} -> [Code || {Code, _, _} <- Rs]; _ -> error end,
            ?WHENFAIL(ct:log("spec ~p~nresult ~p~nverdict ~p", [Spec, Result, Verdict]),
                      Verdict =:= true andalso length(crashes(Config)) =:= Before)).

%% What the server must have made of the app's answer.
app_rules(Status, Headers, Body, {Code, Got, GotBody}, More) ->
    AppCode = binary_to_integer(binary:part(Status, 0, min(3, byte_size(Status)))),
    Lower = [{string:lowercase(N), V} || {N, V} <- Headers],
    Latin1 = lists:all(fun({N, V}) -> is_binary(unicode:characters_to_binary(<<N/binary, V/binary>>, utf8, latin1)) end,
                       [{<<>>, Status} | Headers]),
    Ours = [{<<"transfer-encoding">>, <<"chunked">>}, {<<"connection">>, <<"close">>},
            {<<"connection">>, <<"keep-alive">>}],
    Hop = [H || {N, _} = H <- Got, lists:member(N, [<<"connection">>, <<"keep-alive">>, <<"proxy-connection">>,
                                                    <<"te">>, <<"trailer">>, <<"transfer-encoding">>,
                                                    <<"upgrade">>, <<"proxy-authenticate">>]),
                                  not lists:member(H, Ours)],
    AppClose = lists:any(fun({<<"connection">>, V}) -> binary:match(string:lowercase(V), <<"close">>) =/= nomatch;
                            (_) -> false
                         end, Lower),
    AppDate = [V || {<<"date">>, V} <- Lower],
    GotDate = [V || {<<"date">>, V} <- Got],
    if
        not Latin1 -> Code =:= 500 orelse {false, not_latin1_but, Code};
        Code =/= AppCode -> {false, {status, Code, AppCode}};
        Hop =/= [] -> {false, {hop_by_hop, Hop}};
        AppDate =/= [], [hd(AppDate)] =/= GotDate -> {false, date};
        AppClose, More =/= [] -> {false, served_after_close};
        AppClose -> lists:member({<<"connection">>, <<"close">>}, Got) orelse {false, no_close};
        true ->
            %% The body as the app gave it, or cut to its Content-Length.
            Sent = unicode:characters_to_binary(Body, utf8, latin1),
            (Code =:= 204 orelse Code =:= 304 orelse GotBody =:= <<>>
             orelse binary:longest_common_prefix([Sent, GotBody]) =:= byte_size(GotBody))
                orelse {false, body}
    end.

quickcheck(Prop, Runs) ->
    case proper:quickcheck(Prop, [{numtests, Runs}, {max_shrinks, 40}, long_result,
                                  {on_output, fun(F, A) -> ct:log(F, A) end}]) of
        true -> ok;
        CounterExample -> ct:fail({counterexample, CounterExample})
    end.

check_property(Port, {Pieces, _Methods} = Req, Config) ->
    Before = length(crashes(Config)),
    %% Debian's PropEr 1.2 cannot report an exception on OTP 23+
    %% (erlang:get_stacktrace/0 is gone): none may escape.
    Result = try check(Port, Req) catch Class:Reason:Stack -> {error, {Class, Reason, Stack}} end,
    %% What the runs came to (in the test's log): statuses, or a close.
    Outcome = case Result of
                  {ok, Responses} -> [Code || {Code, _, _} <- Responses];
                  _ -> error
              end,
    collect(Outcome,
            ?WHENFAIL(ct:log("request ~p~nresult ~p~ncrashes ~p",
                             [iolist_to_binary(Pieces), Result, crashes(Config)]),
                      element(1, Result) =:= ok andalso length(crashes(Config)) =:= Before)).

%% Sends a request (in pieces), half-closes, reads to the end and parses
%% what came back.  {ok, [{Status, Headers, Body}]} when well-formed.
check(Port, Pieces) when is_list(Pieces), not is_tuple(hd(Pieces)) ->
    check(Port, {Pieces, [erlpy_test_http:method(iolist_to_binary(Pieces))]});
check(Port, {Pieces, Methods}) ->
    case erlpy_test_http:exchange(Port, Pieces) of
        {ok, _, Bytes} -> erlpy_test_http:responses(Bytes, Methods);
        Other -> {error, Other}
    end.

%% ------------------------------------------------------------------ generators

%% {Pieces, Methods}: the bytes to send in pieces, and the method of each
%% request in them (a pipelined GET may follow).
request() ->
    ?LET({Blank, Method, Sp1, Target, Sp2, Version, Eol, Headers, HeadEnd, Body, Next, Cut, Splits},
         {blank_lines(), method(), sp(), target(), sp(), version(), eol(), headers(), eol(), body(),
          pipelined(), cut(), splits()},
         begin
             Line = [Method, Sp1, Target, Sp2, Version, Eol],
             Bytes = iolist_to_binary([Blank, Line, Headers, HeadEnd, Body, Next]),
             Methods = [erlpy_test_http:method(Bytes) | [<<"GET">> || Next =/= []]],
             {pieces(cut(Bytes, Cut), Splits), Methods}
         end).

chunked_request() ->
    ?LET({Method, Extra, Chunks, Last, Trailers, End, Next, Cut, Splits},
         {elements([<<"POST">>, <<"PUT">>, <<"HEAD">>]), short_list(header()),
          list(chunk()), last_chunk(),
          short_list(trailer()), eol(), pipelined(), cut(), splits()},
         begin
             Head = [Method, <<" /stream HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n">>,
                     Extra, <<"\r\n">>],
             Bytes = iolist_to_binary([Head, Chunks, Last, Trailers, End, Next]),
             {pieces(cut(Bytes, Cut), Splits), [Method | [<<"GET">> || Next =/= []]]}
         end).

blank_lines() ->
    frequency([{8, []}, {1, list(eol())}]).

method() ->
    frequency([{10, elements([<<"GET">>, <<"POST">>, <<"HEAD">>, <<"PUT">>, <<"DELETE">>, <<"OPTIONS">>])},
               {1, token()}, {1, bytes()}]).

target() ->
    frequency([{10, elements([<<"/echo">>, <<"/stream">>, <<"/empty">>, <<"/echo?a=b&c=%20">>, <<"/%zz%">>,
                              <<"*">>, <<"http://h/stream">>, <<"http://[::1]:8/echo">>, <<"//x">>])},
               {2, ?LET(B, bytes(), [<<"/">>, B])}, {1, bytes()}]).

version() ->
    frequency([{10, <<"HTTP/1.1">>}, {4, <<"HTTP/1.0">>},
               {2, elements([<<"HTTP/2.0">>, <<"HTTP/0.9">>, <<"HTTP/1.12345678901">>, <<"HTTP/x">>,
                             <<"http/1.1">>, <<>>])},
               {1, bytes()}]).

sp() ->
    frequency([{20, <<" ">>}, {1, elements([<<"  ">>, <<"\t">>, <<>>])}]).

eol() ->
    frequency([{30, <<"\r\n">>}, {4, <<"\n">>}, {1, <<"\r">>}]).

%% {Request, Methods, Status, Headers, Body}: a request to /respond asking
%% the app for that answer (UTF-8: see test/python/fuzz_apps.py).
app_response() ->
    ?LET(Chunks, list(app_chunk()),
         ?LET({Method, Version, Status, Headers, Next},
              {elements([<<"GET">>, <<"GET">>, <<"HEAD">>]), elements([<<"HTTP/1.1">>, <<"HTTP/1.0">>]),
               app_status(), list(app_header(length(unicode:characters_to_list(Chunks)))), pipelined()},
              begin
                  Body = iolist_to_binary(lists:join(<<0>>, Chunks)),
                  Spec = iolist_to_binary([Status, [[<<"\n">>, N, <<"\t">>, V] || {N, V} <- Headers],
                                           <<"\n\n">>, Body]),
                  Request = [Method, <<" /respond ">>, Version, <<"\r\nHost: x\r\nContent-Length: ">>,
                             integer_to_binary(byte_size(Spec)), <<"\r\n\r\n">>, Spec,
                             [Next || Version =:= <<"HTTP/1.1">>]],
                  {iolist_to_binary(Request), [Method | [<<"GET">> || Next =/= [], Version =:= <<"HTTP/1.1">>]],
                   Status, Headers, iolist_to_binary(Chunks)}
              end)).

app_status() ->
    frequency([{12, elements([<<"200 OK">>, <<"201 Created">>, <<"204 No Content">>, <<"304 Not Modified">>,
                              <<"404 Not Found">>, <<"500 Oops">>, <<"200 Tr", 16#c3, 16#a8, "s bien">>])},
               {1, <<"200 ", 16#e2, 16#98, 16#83>>}]).

%% Printable latin-1 text as UTF-8 (the app encodes it back to latin-1).
app_chunk() ->
    ?LET(Chars, non_empty(list(frequency([{8, range($\s, $~)}, {1, range(16#a0, 16#ff)}]))),
         unicode:characters_to_binary(Chars)).

app_header(Length) ->
    frequency([{16, {<<"Content-Length">>, integer_to_binary(Length)}},
               {4, {<<"Content-Length">>, integer_to_binary(max(0, Length - 2))}},
               {4, {<<"content-length">>, elements([<<"abc">>, <<"-1">>, <<" 0 ">>, <<"1e3">>])}},
               {16, {elements([<<"Connection">>, <<"Keep-Alive">>, <<"Proxy-Connection">>, <<"TE">>,
                              <<"Trailer">>, <<"Transfer-Encoding">>, <<"transfer-encoding">>, <<"Upgrade">>,
                              <<"Proxy-Authenticate">>]),
                    elements([<<"chunked">>, <<"close">>, <<"keep-alive">>, <<"Close">>, <<"h2c">>,
                              <<"upgrade, close">>, <<"timeout=5">>])}},
               {12, {elements([<<"Date">>, <<"date">>]),
                    elements([<<"Tue, 15 Nov 1994 08:12:31 GMT">>, <<"whenever">>])}},
               {8, {<<"X-Latin">>, <<"caf", 16#c3, 16#a9>>}},
               {1, {<<"X-Snow">>, <<"snow ", 16#e2, 16#98, 16#83>>}},
               {8, {token(), ?LET(V, list(range($\s, $~)), list_to_binary(V))}}]).

%% Mostly a Host and a few fields, each sometimes broken.
headers() ->
    ?LET({Host, N}, {frequency([{6, [[<<"Host: ">>, host()], <<"\r\n">>]}, {1, []}]), range(0, 4)},
         [Host | vector(N, header())]).

header() ->
    ?LET({Field, Eol}, {field(), eol()}, [Field, Eol]).

field() ->
    frequency([{4, [<<"Host: ">>, host()]},
               {8, [<<"Content-Length:">>, ows(), content_length(), ows()]},
               {8, [<<"Transfer-Encoding:">>, ows(), transfer_coding(), ows()]},
               {6, [<<"Connection: ">>, elements([<<"close">>, <<"keep-alive">>, <<"Close">>,
                                                  <<"upgrade, close">>, <<" , ">>])]},
               {3, [<<"Expect: ">>, elements([<<"100-continue">>, <<"100-Continue">>, <<"nothing">>])]},
               {8, [token(), <<": ">>, printable()]},
               %% The framing fields with arbitrary bytes (the crash of issue 8).
               {3, [elements([<<"Content-Length">>, <<"Transfer-Encoding">>, <<"Connection">>,
                              <<"Host">>, <<"Expect">>]), <<": ">>, bytes()]},
               {2, [token(), <<": ">>, bytes()]},
               {1, [token(), <<": ">>, token(), <<"\r\n ">>, token()]},  % obs-fold
               {1, [elements([<<" X">>, <<"X ">>, <<"X\t">>, <<>>]), <<": v">>]},
               {1, bytes()}]).

%% A field value of visible ASCII and obs-text (any byte from 0x80).
printable() ->
    ?LET(Bytes, list(frequency([{4, range(16#21, 16#7e)}, {1, range(16#80, 16#ff)}, {1, $\s}])),
         list_to_binary(Bytes)).

host() ->
    frequency([{12, elements([<<"x">>, <<"example.com:8080">>, <<"[::1]:8080">>, <<"[::1]">>, <<"">>,
                             <<"[::1">>, <<":80">>])},
               {1, bytes()}]).

content_length() ->
    frequency([{12, ?LET(N, range(0, 40), integer_to_binary(N))},
               {1, elements([<<"-1">>, <<"1,1">>, <<"5, 5">>, <<"+5">>, <<"0x10">>, <<"99999999999999999999999">>,
                             <<"4097">>, <<>>])},
               {1, bytes()}]).

transfer_coding() ->
    frequency([{12, <<"chunked">>},
               {2, elements([<<"Chunked">>, <<"gzip, chunked">>, <<"chunked, gzip">>, <<"identity">>,
                             <<"chunked , chunked">>, <<"chunked;q=1">>, <<",chunked">>])},
               {1, bytes()}]).

ows() ->
    elements([<<>>, <<" ">>, <<"\t">>, <<"  \t">>]).

body() ->
    frequency([{4, <<>>}, {3, bytes()}, {3, chunked_body()}]).

chunked_body() ->
    ?LET({Chunks, Last, Trailers, End}, {list(chunk()), last_chunk(), short_list(trailer()), eol()},
         [Chunks, Last, Trailers, End]).

chunk() ->
    ?LET({Data, Size, Ext, Eol, DataEnd}, {non_empty(binary()), chunk_size(), chunk_ext(), eol(), data_end()},
         [case Size of
              right -> integer_to_binary(byte_size(Data), 16);
              right_lower -> string:lowercase(integer_to_binary(byte_size(Data), 16));
              {off, D} -> integer_to_binary(max(0, byte_size(Data) + D), 16);
              Other -> Other
          end, Ext, Eol, Data, DataEnd]).

chunk_size() ->
    frequency([{30, right}, {5, right_lower}, {2, {off, elements([-1, 1, 5])}},
               {1, elements([<<"-1">>, <<"ffffffffffffffffff">>, <<"0x5">>, <<" 5">>, <<"">>, <<"g">>])},
               {1, bytes()}]).

chunk_ext() ->
    frequency([{16, <<>>}, {4, elements([<<";a=b">>, <<" ; x">>, <<";q=\"x y\"">>, <<"\t;">>])}, {1, bytes()}]).

data_end() ->
    frequency([{30, <<"\r\n">>}, {1, elements([<<"\n">>, <<>>, <<"xx">>])}]).

last_chunk() ->
    ?LET({Zeros, Ext, Eol}, {elements([<<"0">>, <<"000">>]), chunk_ext(), eol()}, [Zeros, Ext, Eol]).

trailer() ->
    frequency([{8, [token(), <<": ">>, printable(), <<"\r\n">>]}, {1, [bytes(), eol()]}]).

pipelined() ->
    frequency([{4, []}, {1, <<"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n">>}]).

%% Where to cut the request short (none: keep it whole).
cut() ->
    frequency([{6, none}, {1, {cut, range(0, 400)}}]).

cut(Bytes, none) -> Bytes;
cut(Bytes, {cut, N}) -> binary:part(Bytes, 0, min(N, byte_size(Bytes))).

%% Where to split what is sent into separate sends.
splits() ->
    frequency([{6, []}, {2, list(range(1, 200))}]).

pieces(Bytes, Splits) ->
    pieces(Bytes, lists:usort(Splits), 0).

pieces(Bytes, [At | More], Done) when At - Done < byte_size(Bytes) ->
    <<Piece:(At - Done)/binary, Rest/binary>> = Bytes,
    [Piece | pieces(Rest, More, At)];
pieces(Bytes, _, _) ->
    [Bytes].

short_list(Type) ->
    ?LET(N, frequency([{4, 0}, {2, 1}, {1, range(2, 4)}]), vector(N, Type)).

token() ->
    ?LET(Chars, non_empty(list(elements("abcXYZ019-!#$%&'*+.^_`|~"))), list_to_binary(Chars)).

bytes() ->
    binary().
