%% The HTTP/1.1 front door and the WSGI runner, driven by real clients
%% (curl, Python's http.client, wrk, raw sockets).  Every app is wrapped in
%% wsgiref.validate.validator (test/python/http_apps.py).
-module(erlpy_http_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-compile([export_all, nowarn_export_all]).

all() ->
    [hello_curl, environ_fields, keep_alive_and_pipelining, http10, chunked_response_and_write,
     head_request, file_wrapper_and_close, wsgi_errors_to_logger, python_http_client,
     upload_content_length_1gib, upload_chunked_1gib, chunked_request_with_trailers,
     expect_100_continue, unread_body_is_drained, app_exception_500, app_exception_after_headers,
     client_disconnect_mid_body, slow_client_bounded_response,
     bad_request_line, huge_headers, too_many_headers, bad_chunk_size, body_too_large,
     chunked_body_too_large, slow_sender_timeout, max_connections, wrk_hello,
     flask_json, flask_multipart, flask_stream_upload, flask_streamed_response,
     graceful_stop, bad_app_headers, huge_request_length,
     pipelined_after_bodies, request_in_pieces, long_header_line, folded_header,
     empty_lines_before_request, trickled_body_min_rate, transfer_codings, strict_headers,
     infinite_timeouts, expect_with_late_reader, unread_body_then_close, http10_with_te_closes,
     access_log_option, whole_response_in_reply, bodiless_input_then_body].

init_per_suite(Config) ->
    Config2 = erlpy_test:start(Config),
    {ok, Server} = erlpy_http:start(#{app => <<"http_apps:app">>, port => 0,
                                      header_timeout => 1000, max_body => 2 bsl 30}),
    [{server, Server}, {port, erlpy_http:port(Server)} | Config2].

end_per_suite(Config) ->
    erlpy_http:stop(?config(server, Config)),
    %% The 1 GiB upload file: each run (one per Python, and the sanitizer
    %% run) would otherwise leave one behind in its logs.
    File = filename:join(?config(priv_dir, Config), "gib.bin"),
    _ = [file:delete(F) || F <- [File, File ++ ".sha256"]],
    erlpy_test:stop(Config).

%% The Flask tests need Flask in the embedded Python (Debian's has it, the
%% pyenv builds do not): skipped by name where it is missing.
init_per_testcase(Case, Config) ->
    case atom_to_list(Case) of
        "flask_" ++ _ -> erlpy_test:need_python_module(flask, Config);
        _ -> Config
    end.

end_per_testcase(_Case, _Config) ->
    ok.

url(Config, Path) ->
    "http://127.0.0.1:" ++ integer_to_list(?config(port, Config)) ++ Path.

curl(Args) ->
    os:cmd("curl -s --max-time 120 " ++ Args).

%% ------------------------------------------------------------------ basics

hello_curl(Config) ->
    ?assertEqual("Hello, World!", curl(url(Config, "/hello"))),
    Head = curl("-i " ++ url(Config, "/hello")),
    ?assertMatch("HTTP/1.1 200 OK\r\n" ++ _, Head),
    ?assertNotEqual(nomatch, string:find(Head, "Date: ")),
    ?assertMatch("HTTP/1.1 404" ++ _, curl("-i " ++ url(Config, "/missing"))).

environ_fields(Config) ->
    Out = curl("-H 'X-Test: one' -H 'X-Test: two' -H 'Content-Type: text/x' "
               ++ "'" ++ url(Config, "/environ?a=1&b=%20") ++ "'"),
    {ok, M} = py:call(json, loads, [list_to_binary(Out)]),
    ?assertEqual(#{<<"REQUEST_METHOD">> => <<"GET">>, <<"PATH_INFO">> => <<"/environ">>,
                   <<"QUERY_STRING">> => <<"a=1&b=%20">>, <<"SERVER_PROTOCOL">> => <<"HTTP/1.1">>,
                   <<"HTTP_X_TEST">> => <<"one,two">>, <<"CONTENT_TYPE">> => <<"text/x">>,
                   <<"wsgi.url_scheme">> => <<"http">>}, M).

keep_alive_and_pipelining(Config) ->
    S = connect(Config),
    Req = <<"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n">>,
    %% Three requests in one packet: three responses, in order.
    ok = gen_tcp:send(S, [Req, <<"GET /stream?2 HTTP/1.1\r\nHost: x\r\n\r\n">>, Req]),
    {200, _, <<"Hello, World!">>} = read_response(S),
    {200, H, <<"0\n1\n">>} = read_response(S),
    ?assertEqual(<<"chunked">>, proplists:get_value(<<"transfer-encoding">>, H)),
    {200, _, <<"Hello, World!">>} = read_response(S),
    %% And the connection is still good afterwards.
    ok = gen_tcp:send(S, Req),
    {200, _, <<"Hello, World!">>} = read_response(S),
    gen_tcp:close(S).

http10(Config) ->
    S = connect(Config),
    ok = gen_tcp:send(S, <<"GET /stream?2 HTTP/1.0\r\n\r\n">>),
    %% No chunked encoding for 1.0: the body ends with the connection.
    {ok, All} = recv_all(S),
    ?assertMatch(<<"HTTP/1.1 200 OK\r\n", _/binary>>, All),
    ?assertEqual(nomatch, binary:match(All, <<"chunked">>)),
    ?assertMatch([_, <<"0\n1\n">>], binary:split(All, <<"\r\n\r\n">>)),
    S2 = connect(Config),
    ok = gen_tcp:send(S2, <<"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n">>),
    {200, H, <<"Hello, World!">>} = read_response(S2),
    ?assertEqual(<<"keep-alive">>, proplists:get_value(<<"connection">>, H)),
    gen_tcp:close(S2).

chunked_response_and_write(Config) ->
    ?assertEqual("0\n1\n2\n3\n4\n", curl(url(Config, "/stream?5"))),
    ?assertEqual("from write() and iterable", curl(url(Config, "/write"))).

head_request(Config) ->
    S = connect(Config),
    ok = gen_tcp:send(S, <<"HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n">>),
    {200, H, <<>>} = read_response(S, head),
    ?assertEqual(<<"13">>, proplists:get_value(<<"content-length">>, H)),
    {200, _, <<"Hello, World!">>} = read_response(S),
    gen_tcp:close(S).

file_wrapper_and_close(Config) ->
    ?assertEqual(10000, length(curl(url(Config, "/file")))),
    {ok, _} = py:eval(<<"__import__('http_apps').events.clear()">>),
    "x" = curl(url(Config, "/closing")),
    erlpy_test:wait_until(fun() ->
                                  {ok, E} = py:eval(<<"__import__('http_apps').events">>),
                                  lists:member({<<"closed">>, true}, E)
                          end).

wsgi_errors_to_logger(Config) ->
    ok = logger:add_handler(wsgi_errors_capture, ?MODULE, #{config => self()}),
    try
        ?assertMatch("HTTP/1.1 204" ++ _, curl("-i " ++ url(Config, "/errors"))),
        receive {logged, Text} -> ?assertNotEqual(nomatch, string:find(Text, "a line for the logger"))
        after 5000 -> ct:fail(nothing_logged)
        end
    after
        logger:remove_handler(wsgi_errors_capture)
    end.

%% logger handler callback for wsgi_errors_to_logger
log(#{msg := Msg}, #{config := Pid}) ->
    Text = case Msg of
               {string, S} -> S;
               {report, R} -> io_lib:format("~p", [R]);
               {F, A} -> io_lib:format(F, A)
           end,
    Pid ! {logged, lists:flatten(io_lib:format("~ts", [Text]))}.

python_http_client(Config) ->
    Script = "import http.client, sys\n"
             "c = http.client.HTTPConnection('127.0.0.1', int(sys.argv[1]))\n"
             "out = []\n"
             "for _ in range(3):\n"
             "    c.request('GET', '/hello'); r = c.getresponse(); out.append(r.read().decode())\n"
             "c.request('POST', '/sha256', body=b'abc' * 1000); out.append(c.getresponse().read().decode())\n"
             "c.request('POST', '/sha256', body=iter([b'ab', b'c']), encode_chunked=True,"
             " headers={'Transfer-Encoding': 'chunked'}); out.append(c.getresponse().read().decode())\n"
             "print('|'.join(out))\n",
    File = filename:join(?config(priv_dir, Config), "client.py"),
    ok = file:write_file(File, Script),
    Out = string:trim(os:cmd("/usr/bin/python3 " ++ File ++ " " ++ integer_to_list(?config(port, Config)))),
    Abc = binary_to_list(sha_hex(binary:copy(<<"abc">>, 1000))),
    ?assertEqual("Hello, World!|Hello, World!|Hello, World!|3000 " ++ Abc ++ "|3 " ++ binary_to_list(sha_hex(<<"abc">>)), Out).

%% ------------------------------------------------------------------ uploads

upload_content_length_1gib(Config) ->
    {File, Hex} = gib_file(Config),
    Out = curl("-T " ++ File ++ " " ++ url(Config, "/sha256")),
    ?assertEqual("1073741824 " ++ Hex, Out).

upload_chunked_1gib(Config) ->
    {File, Hex} = gib_file(Config),
    Out = curl("-H 'Transfer-Encoding: chunked' -T " ++ File ++ " " ++ url(Config, "/sha256")),
    ?assertEqual("1073741824 " ++ Hex, Out).

gib_file(Config) ->
    erlpy_test:gib_file(?config(priv_dir, Config)).

chunked_request_with_trailers(Config) ->
    S = connect(Config),
    ok = gen_tcp:send(S, <<"POST /sha256 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "3;ext=1\r\nabc\r\n1\r\nd\r\n0\r\nX-Trailer: yes\r\n\r\n">>),
    {200, _, Body} = read_response(S),
    ?assertEqual(<<"4 ", (sha_hex(<<"abcd">>))/binary>>, Body),
    ok = gen_tcp:send(S, <<"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n">>),
    {200, _, <<"Hello, World!">>} = read_response(S),
    gen_tcp:close(S).

expect_100_continue(Config) ->
    S = connect(Config),
    ok = gen_tcp:send(S, <<"POST /sha256 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                           "Expect: 100-continue\r\n\r\n">>),
    %% Answered once the app reads the body, before any byte of it is sent.
    {ok, Continue} = gen_tcp:recv(S, 25, 5000),
    ?assertEqual(<<"HTTP/1.1 100 Continue\r\n\r\n">>, Continue),
    ok = gen_tcp:send(S, <<"hello">>),
    {200, _, Body} = read_response(S),
    ?assertEqual(<<"5 ", (sha_hex(<<"hello">>))/binary>>, Body),
    %% An app that never reads a body too big to be read before it starts
    %% (buffer_body): no 100, just the answer, and the connection closes
    %% (the client may never send that body).
    ok = gen_tcp:send(S, <<"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n"
                           "Expect: 100-continue\r\n\r\n">>),
    {200, H, <<"Hello, World!">>} = read_response(S),
    ?assertEqual(<<"close">>, proplists:get_value(<<"connection">>, H)),
    ?assertEqual({ok, <<>>}, recv_all(S)),
    %% Never for HTTP/1.0.
    S2 = connect(Config),
    ok = gen_tcp:send(S2, <<"POST /sha256 HTTP/1.0\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n">>),
    ?assertEqual({error, timeout}, gen_tcp:recv(S2, 0, 300)),
    ok = gen_tcp:send(S2, <<"hi">>),
    {ok, All} = recv_all(S2),
    ?assertMatch(<<"HTTP/1.1 200 OK", _/binary>>, All).

unread_body_is_drained(Config) ->
    S = connect(Config),
    Body = binary:copy(<<"z">>, 100000),
    ok = gen_tcp:send(S, [<<"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n">>, Body,
                          <<"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n">>]),
    {200, _, <<"Hello, World!">>} = read_response(S),
    {200, _, <<"Hello, World!">>} = read_response(S),
    gen_tcp:close(S).

app_exception_500(Config) ->
    ?assertMatch("HTTP/1.1 500" ++ _, curl("-i " ++ url(Config, "/boom"))),
    ?assertEqual("Hello, World!", curl(url(Config, "/hello"))).

app_exception_after_headers(Config) ->
    S = connect(Config),
    ok = gen_tcp:send(S, <<"GET /boom-late HTTP/1.1\r\nHost: x\r\n\r\n">>),
    %% The headers and first chunk went out; then the connection closes
    %% without the terminating chunk.
    {ok, All} = recv_all(S),
    ?assertMatch(<<"HTTP/1.1 200 OK", _/binary>>, All),
    ?assertNotEqual(nomatch, binary:match(All, <<"partial">>)),
    ?assertEqual(nomatch, binary:match(All, <<"\r\n0\r\n\r\n">>)),
    ?assertEqual("Hello, World!", curl(url(Config, "/hello"))).

client_disconnect_mid_body(Config) ->
    {ok, _} = py:eval(<<"__import__('http_apps').events.clear()">>),
    S = connect(Config),
    ok = gen_tcp:send(S, [<<"POST /sha256 HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n">>,
                          binary:copy(<<"a">>, 1000)]),
    timer:sleep(200),
    ok = gen_tcp:close(S),
    erlpy_test:wait_until(fun() ->
                                  {ok, E} = py:eval(<<"__import__('http_apps').events">>),
                                  lists:member({<<"read_error">>, <<"StreamAborted">>}, E)
                          end),
    ?assertEqual("Hello, World!", curl(url(Config, "/hello"))).

%% A client that does not read: the app is held back, not the memory.
slow_client_bounded_response(Config) ->
    {ok, _} = py:eval(<<"__import__('http_apps').events.clear()">>),
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, ?config(port, Config),
                              [binary, {active, false}, {recbuf, 65536}]),
    ok = gen_tcp:send(S, <<"GET /big HTTP/1.1\r\nHost: x\r\n\r\n">>),
    timer:sleep(1000),
    {ok, E} = py:eval(<<"len([e for e in __import__('http_apps').events if e[0] == 'big_chunk'])">>),
    %% 64 chunks of 1 MiB exist; only socket buffers plus the 256 KiB window
    %% can have been produced before the client reads.
    ct:pal("chunks produced before the client read: ~b of 64", [E]),
    ?assert(E < 20),
    {200, _, Body} = read_response(S),
    ?assertEqual(64 * (1 bsl 20), byte_size(Body)),
    gen_tcp:close(S).

%% ------------------------------------------------------------------ hostile

bad_request_line(Config) ->
    [begin
         S = connect(Config),
         ok = gen_tcp:send(S, Req),
         {ok, Resp} = recv_all(S),
         ?assertMatch(<<"HTTP/1.1 ", C, _/binary>> when C =:= $4 orelse C =:= $5, Resp)
     end || Req <- [<<"NONSENSE\r\n\r\n">>, <<"GET / HTTP/1.1\r\n\r\n">>, <<"GET / HTTP/3.0\r\nHost: x\r\n\r\n">>,
                    <<"GET /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n">>,
                    <<"GET /hello HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n">>,
                    <<"POST /hello HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n">>]],
    ?assertEqual("Hello, World!", curl(url(Config, "/hello"))).

huge_headers(Config) ->
    S = connect(Config),
    ok = gen_tcp:send(S, [<<"GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: ">>, binary:copy(<<"a">>, 20000), <<"\r\n\r\n">>]),
    {ok, Resp} = recv_all(S),
    ?assertMatch(<<"HTTP/1.1 431", _/binary>>, Resp),
    ?assertEqual("Hello, World!", curl(url(Config, "/hello"))).

too_many_headers(Config) ->
    S = connect(Config),
    ok = gen_tcp:send(S, [<<"GET /hello HTTP/1.1\r\nHost: x\r\n">>,
                          [[<<"X-H">>, integer_to_binary(I), <<": v\r\n">>] || I <- lists:seq(1, 200)], <<"\r\n">>]),
    {ok, Resp} = recv_all(S),
    ?assertMatch(<<"HTTP/1.1 431", _/binary>>, Resp).

bad_chunk_size(Config) ->
    S = connect(Config),
    ok = gen_tcp:send(S, <<"POST /sha256 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n">>),
    {ok, Resp} = recv_all(S),
    ?assertMatch(<<"HTTP/1.1 400", _/binary>>, Resp),
    ?assertEqual("Hello, World!", curl(url(Config, "/hello"))).

body_too_large(_Config) ->
    {ok, Small} = erlpy_http:start(#{app => <<"http_apps:app">>, port => 0, max_body => 1000}),
    P = erlpy_http:port(Small),
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, P, [binary, {active, false}]),
    ok = gen_tcp:send(S, <<"POST /sha256 HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n">>),
    {ok, Resp} = recv_all(S),
    ?assertMatch(<<"HTTP/1.1 413", _/binary>>, Resp),
    erlpy_http:stop(Small).

chunked_body_too_large(Config) ->
    _ = Config,
    {ok, _} = py:eval(<<"__import__('http_apps').events.clear()">>),
    %% A streamed body (buffer_body 0: none is read before the app starts).
    {ok, Small} = erlpy_http:start(#{app => <<"http_apps:app">>, port => 0, max_body => 1000,
                                     buffer_body => 0}),
    P = erlpy_http:port(Small),
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, P, [binary, {active, false}]),
    ok = gen_tcp:send(S, [<<"POST /sha256 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n">>,
                          [<<"200\r\n">>, binary:copy(<<"q">>, 512), <<"\r\n">>],
                          [<<"200\r\n">>, binary:copy(<<"q">>, 512), <<"\r\n">>]]),
    {ok, Resp} = recv_all(S),
    ?assertMatch(<<"HTTP/1.1 413", _/binary>>, Resp),
    %% The app saw an exception, not a short body.
    {ok, E} = py:eval(<<"__import__('http_apps').events">>),
    ?assert(lists:member({<<"read_error">>, <<"StreamAborted">>}, E)),
    erlpy_http:stop(Small).

slow_sender_timeout(Config) ->
    S = connect(Config),
    ok = gen_tcp:send(S, <<"GET /hello HTTP/1.1\r\nHo">>),
    %% header_timeout is 1 s in this suite.
    {ok, Resp} = recv_all(S),
    ?assertMatch(<<"HTTP/1.1 408", _/binary>>, Resp).

max_connections(_Config) ->
    {ok, Srv} = erlpy_http:start(#{app => <<"http_apps:app">>, port => 0, max_connections => 2}),
    P = erlpy_http:port(Srv),
    Open = [begin {ok, S} = gen_tcp:connect({127, 0, 0, 1}, P, [binary, {active, false}]), S end
            || _ <- [1, 2]],
    erlpy_test:wait_until(fun() -> erlpy_http:connections(Srv) =:= 2 end),
    {ok, S3} = gen_tcp:connect({127, 0, 0, 1}, P, [binary, {active, false}]),
    {ok, Resp} = recv_all(S3),
    ?assertMatch(<<"HTTP/1.1 503", _/binary>>, Resp),
    [gen_tcp:close(S) || S <- Open],
    erlpy_test:wait_until(fun() -> erlpy_http:connections(Srv) =:= 0 end),
    erlpy_http:stop(Srv).

wrk_hello(Config) ->
    Out = os:cmd("wrk -t2 -c10 -d2s " ++ url(Config, "/hello")),
    ct:pal("~s", [Out]),
    ?assertEqual(nomatch, string:find(Out, "Non-2xx")),
    ?assertEqual(nomatch, string:find(Out, "Socket errors")),
    {match, [N]} = re:run(Out, "([0-9]+) requests in", [{capture, all_but_first, list}]),
    ?assert(list_to_integer(N) > 100).

%% ------------------------------------------------------------------ Flask

flask_server(_Config) ->
    {ok, Srv} = erlpy_http:start(#{app => <<"http_apps:flask_app">>, port => 0}),
    {Srv, "http://127.0.0.1:" ++ integer_to_list(erlpy_http:port(Srv))}.

flask_json(Config) ->
    {Srv, Base} = flask_server(Config),
    Out = curl("-H 'Content-Type: application/json' -d '{\"numbers\": [1, 2, 3], \"name\": \"x\"}' " ++ Base ++ "/json"),
    {ok, M} = py:call(json, loads, [list_to_binary(Out)]),
    ?assertEqual(#{<<"sum">> => 6, <<"name">> => <<"x">>}, M),
    erlpy_http:stop(Srv).

flask_multipart(Config) ->
    {Srv, Base} = flask_server(Config),
    File = filename:join(?config(priv_dir, Config), "upload.bin"),
    Data = crypto:strong_rand_bytes(3 bsl 20),
    ok = file:write_file(File, Data),
    Out = curl("-F field=value -F file=@" ++ File ++ " " ++ Base ++ "/form"),
    {ok, M} = py:call(json, loads, [list_to_binary(Out)]),
    ?assertEqual(#{<<"field">> => <<"value">>, <<"filename">> => <<"upload.bin">>,
                   <<"size">> => 3 bsl 20, <<"sha256">> => sha_hex(Data)}, M),
    erlpy_http:stop(Srv).

flask_stream_upload(Config) ->
    {Srv, Base} = flask_server(Config),
    File = filename:join(?config(priv_dir, Config), "stream.bin"),
    Data = crypto:strong_rand_bytes(5 bsl 20),
    ok = file:write_file(File, Data),
    Out = curl("-H 'Content-Type: application/octet-stream' --data-binary @" ++ File ++ " " ++ Base ++ "/stream-upload"),
    ?assertEqual("5242880 " ++ binary_to_list(sha_hex(Data)), Out),
    erlpy_http:stop(Srv).

flask_streamed_response(Config) ->
    {Srv, Base} = flask_server(Config),
    Out = curl("-i " ++ Base ++ "/streamed"),
    ?assertNotEqual(nomatch, string:find(Out, "Transfer-Encoding: chunked")),
    ?assertNotEqual(nomatch, string:find(Out, "part 0\npart 1\npart 2\npart 3\npart 4\n")),
    erlpy_http:stop(Srv).

%% ------------------------------------------------------------------ stop

graceful_stop(_Config) ->
    {ok, Srv} = erlpy_http:start(#{app => <<"http_apps:app">>, port => 0}),
    P = erlpy_http:port(Srv),
    Self = self(),
    spawn_link(fun() -> Self ! {slow, os:cmd("curl -s --max-time 20 http://127.0.0.1:" ++ integer_to_list(P) ++ "/slow")} end),
    {ok, Idle} = gen_tcp:connect({127, 0, 0, 1}, P, [binary, {active, false}]),
    erlpy_test:wait_until(fun() -> erlpy_http:connections(Srv) =:= 2 end),
    %% The request is in the app (not still on its way): it is in flight.
    erlpy_test:wait_until(fun() -> py:eval(<<"'slow' in __import__('http_apps')._gates">>) =:= {ok, true} end),
    spawn_link(fun() -> Self ! {stopped, erlpy_http:stop(Srv)} end),
    %% The idle keep-alive connection is closed; new ones are refused.
    ?assertEqual({error, closed}, gen_tcp:recv(Idle, 0, 5000)),
    erlpy_test:wait_until(fun() -> gen_tcp:connect({127, 0, 0, 1}, P, [binary]) =:= {error, econnrefused} end),
    %% The request in flight finishes.
    {ok, true} = py:eval(<<"__import__('http_apps').gate('slow').set() or True">>),
    receive {slow, Out} -> ?assertEqual("slow", Out) after 10000 -> ct:fail(slow_lost) end,
    receive {stopped, ok} -> ok after 10000 -> ct:fail(not_stopped) end.

%% ------------------------------------------------------------------ helpers

connect(Config) ->
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, ?config(port, Config), [binary, {active, false}]),
    S.

connect_to(Server) ->
    connect([{port, erlpy_http:port(Server)}]).

recv_all(S) ->
    recv_all(S, <<>>).

recv_all(S, Acc) ->
    case gen_tcp:recv(S, 0, 10000) of
        {ok, Data} -> recv_all(S, <<Acc/binary, Data/binary>>);
        {error, closed} -> {ok, Acc};
        {error, Reason} -> {error, Reason, Acc}
    end.

read_response(S) ->
    read_response(S, get).

%% One response off a keep-alive connection: {Status, Headers, Body}.
read_response(S, Method) ->
    ok = inet:setopts(S, [{packet, http_bin}]),
    {ok, {http_response, _, Status, _}} = gen_tcp:recv(S, 0, 10000),
    Headers = read_headers(S, []),
    ok = inet:setopts(S, [{packet, raw}]),
    Body = case {Method, proplists:get_value(<<"content-length">>, Headers),
                 proplists:get_value(<<"transfer-encoding">>, Headers)} of
               {head, _, _} -> <<>>;
               {_, undefined, <<"chunked">>} -> read_chunks(S, <<>>);
               {_, N, _} when N =/= undefined -> recv_n(S, binary_to_integer(N))
           end,
    {Status, Headers, Body}.

read_headers(S, Acc) ->
    case gen_tcp:recv(S, 0, 10000) of
        {ok, {http_header, _, Name, _, Value}} ->
            N = string:lowercase(if is_atom(Name) -> atom_to_binary(Name); true -> Name end),
            read_headers(S, [{N, Value} | Acc]);
        {ok, http_eoh} ->
            lists:reverse(Acc)
    end.

read_chunks(S, Acc) ->
    ok = inet:setopts(S, [{packet, line}]),
    {ok, Line} = gen_tcp:recv(S, 0, 10000),
    ok = inet:setopts(S, [{packet, raw}]),
    case binary_to_integer(string:trim(Line), 16) of
        0 -> <<"\r\n">> = recv_n(S, 2), Acc;
        N -> Data = recv_n(S, N), <<"\r\n">> = recv_n(S, 2), read_chunks(S, <<Acc/binary, Data/binary>>)
    end.

recv_n(_S, 0) -> <<>>;
recv_n(S, N) -> {ok, D} = gen_tcp:recv(S, N, 10000), D.

sha_hex(Data) ->
    string:lowercase(binary:encode_hex(crypto:hash(sha256, Data))).

%% Regressions: an app's bad Content-Length crashed the connection process;
%% CR/LF in a header value went to the wire (response splitting).
bad_app_headers(_Config) ->
    {ok, Srv} = erlpy_http:start(#{app => <<"http_apps:unchecked">>, port => 0}),
    Base = "http://127.0.0.1:" ++ integer_to_list(erlpy_http:port(Srv)),
    Bad = curl("-i " ++ Base ++ "/bad-length"),
    ?assertMatch("HTTP/1.1 200" ++ _, Bad),
    ?assertEqual(nomatch, string:find(Bad, "abc")),
    ?assertNotEqual(nomatch, string:find(Bad, "body")),
    Split = curl("-i " ++ Base ++ "/split"),
    ?assertMatch("HTTP/1.1 500" ++ _, Split),
    ?assertEqual(nomatch, string:find(Split, "evil")),
    ?assertEqual(100000, length(curl(Base ++ "/tiny?100000"))),
    erlpy_http:stop(Srv).

%% A list or tuple body up to the window comes back in the job's reply (one
%% message); bigger ones, other chunk types, HEAD and keep-alive behave the
%% same as through the messages.
whole_response_in_reply(_Config) ->
    {ok, Srv} = erlpy_http:start(#{app => <<"http_apps:unchecked">>, port => 0}),
    Base = "http://127.0.0.1:" ++ integer_to_list(erlpy_http:port(Srv)),
    W = fun(Kind) -> curl(Base ++ "/whole?" ++ Kind) end,
    ?assertEqual("abc", W("list")),
    ?assertEqual("one-two", W("tuple")),
    ?assertEqual("", W("empty")),
    ?assertEqual("single", W("one")),
    ?assertEqual("xy", W("bytearray")),
    ?assertEqual("pq", W("mixed")),
    ?assertEqual(lists:duplicate(200000, $x) ++ lists:duplicate(200000, $y), W("big")),
    %% Keep-alive: both answers on one connection, the first framed.
    Two = curl("-i " ++ Base ++ "/whole?list " ++ Base ++ "/whole?one"),
    ?assertMatch("HTTP/1.1 200" ++ _, Two),
    ?assertNotEqual(nomatch, string:find(Two, "abcHTTP/1.1 200")),
    ?assertNotEqual(nomatch, string:find(Two, "single")),
    Head = curl("-I " ++ Base ++ "/whole?list"),
    ?assertMatch("HTTP/1.1 200" ++ _, Head),
    ?assertEqual(nomatch, string:find(Head, "abc")),
    ?assertMatch("HTTP/1.1 500" ++ _, curl("-i " ++ Base ++ "/whole-no-start")),
    erlpy_http:stop(Srv).

huge_request_length(Config) ->
    S = connect(Config),
    ok = gen_tcp:send(S, <<"POST /sha256 HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n">>),
    {ok, Resp} = recv_all(S),
    ?assertMatch(<<"HTTP/1.1 413", _/binary>>, Resp).

%% ------------------------------------------------------------------ framing

%% Bodies of both framings and the requests after them in one packet: the
%% bytes past each body belong to the next request.
pipelined_after_bodies(Config) ->
    S = connect(Config),
    ok = gen_tcp:send(S, [<<"POST /sha256 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello">>,
                          <<"POST /sha256 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                            "2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n">>,
                          <<"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n">>,
                          <<"POST /sha256 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nxyz">>]),
    ?assertEqual({200, <<"5 ", (sha_hex(<<"hello">>))/binary>>}, status_body(read_response(S))),
    ?assertEqual({200, <<"5 ", (sha_hex(<<"abcde">>))/binary>>}, status_body(read_response(S))),
    ?assertEqual({200, <<"Hello, World!">>}, status_body(read_response(S))),
    ?assertEqual({200, <<"3 ", (sha_hex(<<"xyz">>))/binary>>}, status_body(read_response(S))),
    gen_tcp:close(S).

%% A request without a body gets no buffer (erlpy_http_body:start/4): its
%% wsgi.input is an empty file all the same, and a request with a body
%% after it on the same connection reads its own body.
bodiless_input_then_body(Config) ->
    S = connect(Config),
    Get = <<"GET /input-probe HTTP/1.1\r\nHost: x\r\n\r\n">>,
    Empty = [<<>>, <<>>, <<>>, <<>>],
    ok = gen_tcp:send(S, Get),
    ?assertEqual(Empty, probe(read_response(S))),
    ok = gen_tcp:send(S, <<"POST /input-probe HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nab\ncd\n">>),
    ?assertEqual([<<"ab\n">>, <<"cd\n">>, <<>>, <<>>], probe(read_response(S))),
    %% Pipelined: bodiless, chunked, bodiless in one packet.
    ok = gen_tcp:send(S, [Get, <<"POST /input-probe HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 "3\r\nx\ny\r\n0\r\n\r\n">>, Get]),
    ?assertEqual(Empty, probe(read_response(S))),
    ?assertEqual([<<"x\n">>, <<"y">>, <<>>, <<>>], probe(read_response(S))),
    ?assertEqual(Empty, probe(read_response(S))),
    gen_tcp:close(S).

probe({200, _, Body}) ->
    {ok, Seen} = py:call(json, loads, [Body]),
    Seen.

%% A request cut anywhere, in CRLFs and chunk-size lines too, still parses.
request_in_pieces(Config) ->
    Req = <<"POST /sha256 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            "3;e=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: 1\r\n\r\n"
            "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n">>,
    S = connect(Config),
    ok = inet:setopts(S, [{nodelay, true}]),
    [begin ok = gen_tcp:send(S, <<B>>), timer:sleep(1) end || <<B>> <= Req],
    ?assertEqual({200, <<"19 ", (sha_hex(<<"abc0123456789abcdef">>))/binary>>},
                 status_body(read_response(S))),
    ?assertEqual({200, <<"Hello, World!">>}, status_body(read_response(S))),
    gen_tcp:close(S).

%% A header line longer than any limit gets its 431, not a dropped connection.
long_header_line(Config) ->
    S = connect(Config),
    ok = gen_tcp:send(S, [<<"GET /hello HTTP/1.1\r\nHost: x\r\nX-Long: ">>,
                          binary:copy(<<"a">>, 200000), <<"\r\n\r\n">>]),
    {ok, Resp} = recv_all(S),
    ?assertMatch(<<"HTTP/1.1 431", _/binary>>, Resp),
    S2 = connect(Config),
    ok = gen_tcp:send(S2, [<<"GET /">>, binary:copy(<<"a">>, 200000), <<" HTTP/1.1\r\n">>]),
    {ok, Resp2} = recv_all(S2),
    ?assertMatch(<<"HTTP/1.1 414", _/binary>>, Resp2).

%% RFC 9112 5.2: a folded field value (obs-fold) is rejected: unfolded, it
%% could smuggle a header past a proxy that does not unfold.
folded_header(Config) ->
    S = connect(Config),
    ok = gen_tcp:send(S, <<"POST /hello HTTP/1.1\r\nHost: a\r\nX-A: b\r\n Content-Length: 28\r\n\r\n"
                           "GET /x HTTP/1.1\r\nHost: a\r\n\r\n">>),
    {ok, Resp} = recv_all(S),
    ?assertMatch(<<"HTTP/1.1 400", _/binary>>, Resp),
    ?assertEqual(nomatch, binary:match(Resp, <<"404">>)).

%% RFC 9112 2.2: empty lines before a request line are ignored.
empty_lines_before_request(Config) ->
    S = connect(Config),
    ok = gen_tcp:send(S, <<"\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n">>),
    ?assertEqual({200, <<"Hello, World!">>}, status_body(read_response(S))),
    gen_tcp:close(S).

%% A client trickling its body, each byte well within body_timeout, is cut
%% off by min_body_rate: the app's read raises, the client gets a 408.  (A
%% streamed body, buffer_body 0; erlpy_http_slow_SUITE has the small one,
%% read before the app starts.)
trickled_body_min_rate(_Config) ->
    {ok, _} = py:eval(<<"__import__('http_apps').events.clear()">>),
    {ok, Srv} = erlpy_http:start(#{app => <<"http_apps:app">>, port => 0, buffer_body => 0,
                                    body_timeout => 1000, min_body_rate => 1000}),
    S = connect_to(Srv),
    ok = gen_tcp:send(S, <<"POST /sha256 HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n">>),
    Trickle = spawn_link(fun Loop() -> _ = gen_tcp:send(S, <<"z">>), timer:sleep(300), Loop() end),
    {ok, Resp} = recv_all(S),
    unlink(Trickle),
    exit(Trickle, kill),
    ?assertMatch(<<"HTTP/1.1 408", _/binary>>, Resp),
    {ok, E} = py:eval(<<"__import__('http_apps').events">>),
    ?assert(lists:member({<<"read_error">>, <<"StreamAborted">>}, E)),
    %% A steady client at the same per-piece pace but above the rate passes.
    S2 = connect_to(Srv),
    ok = gen_tcp:send(S2, <<"POST /sha256 HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\n\r\n">>),
    [begin ok = gen_tcp:send(S2, binary:copy(<<"z">>, 1000)), timer:sleep(300) end || _ <- lists:seq(1, 4)],
    ?assertEqual({200, <<"4000 ", (sha_hex(binary:copy(<<"z">>, 4000)))/binary>>},
                 status_body(read_response(S2))),
    erlpy_http:stop(Srv).

status_body({Status, _Headers, Body}) ->
    {Status, Body}.

%% Only "chunked" alone is decoded; "gzip, chunked" would hand the app a
%% still-encoded body (501); chunked not last leaves no length (400).
transfer_codings(Config) ->
    Post = fun(TE) ->
                   S = connect(Config),
                   ok = gen_tcp:send(S, [<<"POST /sha256 HTTP/1.1\r\nHost: x\r\n">>, TE,
                                         <<"\r\n\r\n1\r\na\r\n0\r\n\r\n">>]),
                   {ok, <<"HTTP/1.1 ", Code:3/binary, _/binary>>} = recv_all(S),
                   Code
           end,
    ?assertEqual(<<"501">>, Post(<<"Transfer-Encoding: gzip, chunked">>)),
    ?assertEqual(<<"501">>, Post(<<"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked">>)),
    ?assertEqual(<<"400">>, Post(<<"Transfer-Encoding: chunked, gzip">>)),
    ?assertEqual(<<"400">>, Post(<<"Transfer-Encoding: gzip">>)),
    S = connect(Config),
    ok = gen_tcp:send(S, <<"POST /sha256 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:  Chunked \r\n\r\n"
                           "1\r\na\r\n0\r\n\r\n">>),
    ?assertEqual({200, <<"1 ", (sha_hex(<<"a">>))/binary>>}, status_body(read_response(S))),
    gen_tcp:close(S).

%% Two Host fields (RFC 9112 3.2), an empty field name, and a length padded
%% with anything but SP/HTAB are bad requests.
strict_headers(Config) ->
    [begin
         S = connect(Config),
         ok = gen_tcp:send(S, Req),
         {ok, Resp} = recv_all(S),
         ?assertMatch(<<"HTTP/1.1 400", _/binary>>, Resp)
     end || Req <- [<<"GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n">>,
                    <<"GET /hello HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n">>,
                    <<"POST /sha256 HTTP/1.1\r\nHost: a\r\nContent-Length: \v3\r\n\r\nabc">>]],
    S2 = connect(Config),
    ok = gen_tcp:send(S2, <<"POST /sha256 HTTP/1.1\r\nHost: a\r\nContent-Length: 3 \t\r\n\r\nabc">>),
    ?assertEqual({200, <<"3 ", (sha_hex(<<"abc">>))/binary>>}, status_body(read_response(S2))),
    gen_tcp:close(S2).

%% `infinity' is a valid timeout for every timeout option.
infinite_timeouts(_Config) ->
    {ok, Srv} = erlpy_http:start(#{app => <<"http_apps:app">>, port => 0, idle_timeout => infinity,
                                    header_timeout => infinity, body_timeout => infinity}),
    S = connect_to(Srv),
    ok = gen_tcp:send(S, <<"POST /sha256 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n">>),
    timer:sleep(100),
    ok = gen_tcp:send(S, <<"hello">>),
    ?assertEqual({200, <<"5 ", (sha_hex(<<"hello">>))/binary>>}, status_body(read_response(S))),
    gen_tcp:close(S),
    erlpy_http:stop(Srv).

%% A client waiting for `100 Continue' is not late while the app has not
%% asked for the body yet, however long that takes.
expect_with_late_reader(_Config) ->
    {ok, Srv} = erlpy_http:start(#{app => <<"http_apps:app">>, port => 0, body_timeout => 500}),
    S = connect_to(Srv),
    ok = gen_tcp:send(S, <<"POST /late-sha256?1.5 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                           "Expect: 100-continue\r\n\r\n">>),
    {ok, Continue} = gen_tcp:recv(S, 25, 10000),
    ?assertEqual(<<"HTTP/1.1 100 Continue\r\n\r\n">>, Continue),
    ok = gen_tcp:send(S, <<"hello">>),
    ?assertEqual({200, <<"5 ", (sha_hex(<<"hello">>))/binary>>}, status_body(read_response(S))),
    gen_tcp:close(S),
    erlpy_http:stop(Srv).

%% An app answers without reading a 4 MB body, more than max_drain: the
%% client still gets to send it all and read the answer (no reset that
%% would destroy the response).
%% KNOWN FLAKE, under investigation: about one run in ten the client reads
%% nothing at all (seen on Pythons 3.11 and 3.12, under load).  Until it is
%% found, a first empty answer is logged with how the connection ended
%% (show_econnreset tells a reset from a close) and the request is tried
%% once more; a second failure fails the test.
unread_body_then_close(Config) ->
    case unread_body_then_close_once(Config) of
        {ok, Resp} ->
            check_hello(Resp);
        First ->
            ct:pal("unread_body_then_close: first attempt ended ~p; trying again", [First]),
            {ok, Resp} = unread_body_then_close_once(Config),
            check_hello(Resp)
    end.

unread_body_then_close_once(Config) ->
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, ?config(port, Config),
                              [binary, {active, false}, {show_econnreset, true}]),
    Body = binary:copy(<<"u">>, 4 bsl 20),
    _ = gen_tcp:send(S, [<<"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: ">>,
                          integer_to_binary(byte_size(Body)), <<"\r\n\r\n">>, Body]),
    case recv_all(S) of
        {ok, <<"HTTP/1.1 200", _/binary>>} = Ok -> Ok;
        %% The whole response read, then a reset (seen once under ASan in
        %% a full run, the server closing with body bytes still coming):
        %% the answer was not destroyed, which is what this tests.
        {error, econnreset, <<"HTTP/1.1 200", _/binary>> = Resp} ->
            case binary:longest_common_suffix([Resp, <<"\r\n\r\nHello, World!">>]) of
                17 -> {ok, Resp};
                _ -> {error, econnreset, Resp}
            end;
        Other -> Other
    end.

check_hello(Resp) ->
    ?assertMatch(<<"HTTP/1.1 200", _/binary>>, Resp),
    ?assertNotEqual(nomatch, binary:match(Resp, <<"Hello, World!">>)).

%% RFC 9112 6.1: an HTTP/1.0 request with Transfer-Encoding is served, then
%% the connection closes, whatever it asked for.
http10_with_te_closes(Config) ->
    S = connect(Config),
    ok = gen_tcp:send(S, <<"POST /sha256 HTTP/1.0\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
                           "3\r\nabc\r\n0\r\n\r\nGET /hello HTTP/1.0\r\n\r\n">>),
    {ok, Resp} = recv_all(S),
    ?assertMatch(<<"HTTP/1.1 200", _/binary>>, Resp),
    ?assertNotEqual(nomatch, binary:match(Resp, <<"Connection: close">>)),
    ?assertEqual(nomatch, binary:match(Resp, <<"Hello, World!">>)).

%% access_log => false: no access line; true: one per request.
access_log_option(_Config) ->
    ok = logger:add_handler(access_log_probe, ?MODULE, #{config => self(), level => info}),
    Primary = logger:get_primary_config(),
    ok = logger:set_primary_config(level, info),
    try
        [begin
             {ok, Srv} = erlpy_http:start(#{app => <<"http_apps:app">>, port => 0, access_log => Log}),
             Url = "http://127.0.0.1:" ++ integer_to_list(erlpy_http:port(Srv)) ++ "/hello?probe",
             ?assertEqual("Hello, World!", curl(Url)),
             erlpy_http:stop(Srv),
             Lines = flush_access_lines([]),
             ?assertEqual(Expected, length(Lines))
         end || {Log, Expected} <- [{false, 0}, {true, 1}]]
    after
        logger:set_primary_config(level, maps:get(level, Primary)),
        logger:remove_handler(access_log_probe)
    end.

flush_access_lines(Acc) ->
    receive
        {logged, Line} ->
            case string:find(Line, "/hello?probe") of
                nomatch -> flush_access_lines(Acc);
                _ -> flush_access_lines([Line | Acc])
            end
    after 200 -> Acc
    end.
