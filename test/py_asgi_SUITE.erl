%% The ASGI runner (py_asgi, python/erlpy_asgi.py) behind erlpy_http: raw
%% ASGI apps (test/python/asgi_apps.py) for the protocol, then Starlette,
%% FastAPI and Quart (Debian's packages; skipped by name on Pythons without
%% them), then concurrency and slow clients.
-module(py_asgi_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-compile([export_all, nowarn_export_all]).

all() ->
    [hello_and_interface, scope_fields, streaming_receive, chunked_receive, expect_100_continue,
     disconnect_after_body, request_timeout_cancels_only_its_task, client_gone_cancels_task,
     app_exception_500, app_exception_after_start_closes, no_response_500, bad_response_header,
     background_after_response, streamed_response_flow_control, keep_alive_and_pipelining,
     pipelined_while_the_app_runs,
     lifespan_state, lifespan_failed_startup, lifespan_shutdown_at_stop, app_without_lifespan,
     interface_option, wsgi_and_asgi_in_one_node, loop_survives_conn_kill,
     starlette_basics, starlette_upload_1gib, fastapi_json_form_upload, fastapi_errors_and_background,
     fastapi_stream_upload_chunked_1gib, fastapi_streaming_response, fastapi_is_disconnected,
     quart_app, concurrent_2000_sleeps, trickling_uploads_do_not_stall_get].

init_per_suite(Config) ->
    Config2 = erlpy_test:start(Config),
    {ok, Server} = erlpy_http:start(#{app => <<"asgi_apps:app">>, port => 0}),
    [{server, Server}, {port, erlpy_http:port(Server)} | Config2].

end_per_suite(Config) ->
    erlpy_http:stop(?config(server, Config)),
    File = filename:join(?config(priv_dir, Config), "gib.bin"),
    _ = [file:delete(F) || F <- [File, File ++ ".sha256"]],
    erlpy_test:stop(Config).

%% Framework tests need Debian's packages in the embedded Python (the pyenv
%% builds lack them): skipped by name where they are missing.
init_per_testcase(Case, Config) ->
    case atom_to_list(Case) of
        "starlette_" ++ _ -> erlpy_test:need_python_module(starlette, Config);
        "fastapi_" ++ _ -> need([fastapi, multipart], Config);
        "quart_" ++ _ -> erlpy_test:need_python_module(quart, Config);
        _ -> Config
    end.

end_per_testcase(_Case, _Config) ->
    ok.

need([], Config) -> Config;
need([M | Ms], Config) ->
    case erlpy_test:need_python_module(M, Config) of
        {skip, _} = Skip -> Skip;
        Config2 -> need(Ms, Config2)
    end.

url(Config, Path) ->
    url_port(?config(port, Config), Path).

url_port(Port, Path) ->
    "'http://127.0.0.1:" ++ integer_to_list(Port) ++ Path ++ "'".

curl(Args) ->
    os:cmd("curl -s --max-time 300 " ++ Args).

event(Module, Key) ->
    case py:eval(<<"__import__(m).events.get(k.decode())">>, #{m => Module, k => Key}) of
        {ok, none} -> none;
        {ok, V} -> V
    end.

wait_event(Module, Key, Value) ->
    erlpy_test:wait_until(fun() -> event(Module, Key) =:= Value end, 30000).

connect(Port) ->
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {active, false}, {nodelay, true}]),
    S.

recv_all(S) ->
    recv_all(S, <<>>).

recv_all(S, Acc) ->
    case gen_tcp:recv(S, 0, 30000) of
        {ok, D} -> recv_all(S, <<Acc/binary, D/binary>>);
        {error, _} -> Acc
    end.

%% ------------------------------------------------------------------ protocol

hello_and_interface(Config) ->
    ?assertEqual("Hello, World!", curl(url(Config, "/hello"))),
    ?assertEqual({ok, asgi}, py_asgi:interface(<<"asgi_apps:app">>)),
    ?assertEqual({ok, asgi}, py_asgi:interface(<<"asgi_apps:obj_app">>)),
    ?assertEqual({ok, wsgi}, py_asgi:interface(<<"asgi_apps:wsgi_app">>)),
    ?assert(py_asgi:loops() >= 1).

scope_fields(Config) ->
    Out = curl("-H 'X-Two: a' -H 'X-Two: b' " ++ url(Config, "/scope/caf%C3%A9%20x?a=1&b=%20")),
    {ok, Scope} = py:call(json, loads, [list_to_binary(Out)]),
    #{<<"type">> := <<"http">>, <<"asgi">> := #{<<"version">> := <<"3.0">>, <<"spec_version">> := <<"2.3">>},
      <<"http_version">> := <<"1.1">>, <<"method">> := <<"GET">>, <<"scheme">> := <<"http">>,
      <<"path">> := Path, <<"raw_path">> := <<"/scope/caf%C3%A9%20x">>,
      <<"query_string">> := <<"a=1&b=%20">>, <<"root_path">> := <<>>,
      <<"headers">> := Headers, <<"client">> := [<<"127.0.0.1">>, CPort],
      <<"server">> := [<<"127.0.0.1">>, SPort], <<"state">> := State} = Scope,
    ?assertEqual(unicode:characters_to_binary("/scope/café x"), Path),
    ?assert(is_integer(CPort) andalso CPort > 0),
    ?assertEqual(?config(port, Config), SPort),
    %% Lower-case names, in order, repeated fields kept apart.
    ?assertMatch([[<<"host">>, _], [<<"user-agent">>, _], [<<"accept">>, _],
                  [<<"x-two">>, <<"a">>], [<<"x-two">>, <<"b">>]], Headers),
    %% The lifespan startup of this server put it there.
    ?assertEqual(#{<<"greeting">> => <<"hi from lifespan">>}, State).

%% A body bigger than buffer_body arrives in several http.request events,
%% the last with more_body false.
streaming_receive(Config) ->
    File = filename:join(?config(priv_dir, Config), "five_mib.bin"),
    ok = file:write_file(File, crypto:strong_rand_bytes(5 bsl 20)),
    Hex = sha256_file(File),
    Out = curl("--data-binary @" ++ File ++ " " ++ url(Config, "/echo")),
    [Sum, Size, Events] = string:lexemes(Out, " "),
    ?assertEqual({Hex, "5242880"}, {Sum, Size}),
    ?assert(list_to_integer(Events) > 1),
    file:delete(File).

chunked_receive(Config) ->
    S = connect(?config(port, Config)),
    ok = gen_tcp:send(S, <<"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "3\r\nabc\r\n">>),
    timer:sleep(100),
    ok = gen_tcp:send(S, <<"2\r\nde\r\n0\r\n\r\n">>),
    {ok, {200, _, Body}} = read_response(S),
    Hex = string:lowercase(binary:encode_hex(crypto:hash(sha256, <<"abcde">>))),
    ?assertMatch([Hex, <<"5">>, _], binary:split(Body, <<" ">>, [global])),
    gen_tcp:close(S).

%% The 100 is sent when the app first waits for the body, not before.
expect_100_continue(Config) ->
    S = connect(?config(port, Config)),
    Body = binary:copy(<<"z">>, 300000),
    ok = gen_tcp:send(S, [<<"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: ">>,
                          integer_to_binary(byte_size(Body)), <<"\r\n\r\n">>]),
    {ok, <<"HTTP/1.1 100 Continue\r\n\r\n">>} = gen_tcp:recv(S, 25, 10000),
    ok = gen_tcp:send(S, Body),
    {ok, {200, _, Resp}} = read_response(S),
    ?assertMatch([_, <<"300000">>, _], binary:split(Resp, <<" ">>, [global])),
    gen_tcp:close(S).

%% After its body, receive() waits, and says http.disconnect once the
%% client is gone.
disconnect_after_body(Config) ->
    S = connect(?config(port, Config)),
    ok = gen_tcp:send(S, <<"GET /wait_disconnect?dis1 HTTP/1.1\r\nHost: x\r\n\r\n">>),
    timer:sleep(200),
    ?assertEqual(none, event(asgi_apps, <<"dis1">>)),
    gen_tcp:close(S),
    wait_event(asgi_apps, <<"dis1">>, <<"disconnected">>).

%% request_timeout cancels the task of that request: others on the same
%% loops go on.
request_timeout_cancels_only_its_task(Config) ->
    {ok, Srv} = erlpy_http:start(#{app => <<"asgi_apps:app">>, port => 0, request_timeout => 300}),
    Port = erlpy_http:port(Srv),
    Self = self(),
    spawn_link(fun() -> Self ! {sleep, curl(url_port(Port, "/sleep"))} end),
    Out = curl("-i " ++ url_port(Port, "/forever?timeout1")),
    ?assertMatch("HTTP/1.1 500" ++ _, Out),
    wait_event(asgi_apps, <<"timeout1">>, <<"cancelled">>),
    %% /sleep takes 1 s, past the 300 ms timeout: answered 500 too, but the
    %% point is that the loop and the first server still serve.
    receive {sleep, _} -> ok end,
    ?assertEqual("Hello, World!", curl(url(Config, "/hello"))),
    erlpy_http:stop(Srv).

%% A client that leaves while the app ignores it: the task is cancelled
%% after the grace period, and the loop serves on.
client_gone_cancels_task(Config) ->
    S = connect(?config(port, Config)),
    ok = gen_tcp:send(S, <<"GET /forever?gone1 HTTP/1.1\r\nHost: x\r\n\r\n">>),
    wait_event(asgi_apps, <<"gone1">>, <<"started">>),
    gen_tcp:close(S),
    wait_event(asgi_apps, <<"gone1">>, <<"cancelled">>),
    ?assertEqual("Hello, World!", curl(url(Config, "/hello"))).

app_exception_500(Config) ->
    ?assertMatch("HTTP/1.1 500 Internal Server Error" ++ _, curl("-i " ++ url(Config, "/raise"))),
    ?assertEqual("Hello, World!", curl(url(Config, "/hello"))).

app_exception_after_start_closes(Config) ->
    S = connect(?config(port, Config)),
    ok = gen_tcp:send(S, <<"GET /raise_after_start HTTP/1.1\r\nHost: x\r\n\r\n">>),
    All = recv_all(S),
    %% The response started: it is cut off (no last chunk) and the connection closed.
    ?assertMatch(<<"HTTP/1.1 200 OK\r\n", _/binary>>, All),
    ?assertEqual(nomatch, binary:match(All, <<"0\r\n\r\n">>)),
    gen_tcp:close(S).

no_response_500(Config) ->
    ?assertMatch("HTTP/1.1 500" ++ _, curl("-i " ++ url(Config, "/no_response"))).

bad_response_header(Config) ->
    Out = curl("-i " ++ url(Config, "/bad_header")),
    ?assertMatch("HTTP/1.1 500" ++ _, Out),
    ?assertEqual(nomatch, string:find(Out, "Injected")).

%% The response goes out at once; the task runs on afterwards.
background_after_response(Config) ->
    ?assertEqual("answered", curl(url(Config, "/background?bg1"))),
    ?assertEqual(none, event(asgi_apps, <<"bg1">>)),
    wait_event(asgi_apps, <<"bg1">>, <<"ran after">>).

%% 200 MiB streamed to a client that does not read for a while: the app's
%% send() waits for credit (the connection process does not pile up the
%% response), and everything arrives.
streamed_response_flow_control(Config) ->
    S = connect(?config(port, Config)),
    ok = gen_tcp:send(S, <<"GET /stream?n=3200 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n">>),
    timer:sleep(1000),
    %% The connection process holds at most the window, not the 200 MiB.
    Conns = asgi_conns(),
    Mem = lists:sum([element(2, process_info(P, memory)) || P <- Conns]),
    ct:pal("connection processes ~p, memory ~p", [length(Conns), Mem]),
    ?assert(Mem < 64 bsl 20),
    Len = count_bytes(S, 0),
    gen_tcp:close(S),
    %% Chunked framing around 3200 chunks of 64 KiB.
    ?assert(Len > 3200 * 65536).

recv_until(S, Acc, Done) ->
    case Done(Acc) of
        true -> Acc;
        false ->
            {ok, More} = gen_tcp:recv(S, 0, 60000),
            recv_until(S, <<Acc/binary, More/binary>>, Done)
    end.

is_asgi_conn(P) ->
    case process_info(P, current_stacktrace) of
        {current_stacktrace, St} -> lists:keymember(erlpy_http_asgi, 1, St);
        _ -> false
    end.

count_bytes(S, N) ->
    case gen_tcp:recv(S, 0, 30000) of
        {ok, D} -> count_bytes(S, N + byte_size(D));
        {error, _} -> N
    end.

keep_alive_and_pipelining(Config) ->
    S = connect(?config(port, Config)),
    Req = <<"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n">>,
    ok = gen_tcp:send(S, [Req, Req]),
    %% Both answers, in order, on the one connection (they may come in
    %% one segment: read_response/1 would drop the second).
    Two = recv_until(S, <<>>, fun(B) -> length(binary:matches(B, <<"0\r\n\r\n">>)) >= 2 end),
    ?assertMatch([_, _], binary:matches(Two, <<"HTTP/1.1 200 OK\r\n">>)),
    ?assertMatch([_, _], binary:matches(Two, <<"Hello, World!">>)),
    ok = gen_tcp:send(S, Req),
    {ok, {200, _, <<"Hello, World!">>}} = read_response(S),
    gen_tcp:close(S).

%% The next request comes while the app still runs (the connection
%% watches the socket for the client's leaving then, and so reads it
%% early): it is answered after the first, on the same connection.
pipelined_while_the_app_runs(Config) ->
    S = connect(?config(port, Config)),
    ok = gen_tcp:send(S, <<"GET /sleep HTTP/1.1\r\nHost: x\r\n\r\n">>),
    timer:sleep(300),
    ok = gen_tcp:send(S, <<"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n">>),
    Two = recv_until(S, <<>>, fun(B) -> length(binary:matches(B, <<"0\r\n\r\n">>)) >= 2 end),
    [{First, _}, {Second, _}] = binary:matches(Two, [<<"slept">>, <<"Hello, World!">>]),
    ?assertEqual(<<"slept">>, binary:part(Two, First, 5)),
    ?assertEqual(<<"Hello">>, binary:part(Two, Second, 5)),
    ok = gen_tcp:send(S, <<"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n">>),
    {ok, {200, _, <<"Hello, World!">>}} = read_response(S),
    gen_tcp:close(S).

%% ------------------------------------------------------------------ lifespan

lifespan_state(_Config) ->
    {ok, Srv} = erlpy_http:start(#{app => <<"asgi_apps:state_app">>, port => 0}),
    ?assertEqual("hi from lifespan", curl(url_port(erlpy_http:port(Srv), "/"))),
    erlpy_http:stop(Srv).

lifespan_failed_startup(_Config) ->
    ?assertEqual({error, {lifespan_startup_failed, <<"database unreachable">>}},
                 erlpy_http:start(#{app => <<"asgi_apps:failing_startup">>, port => 0})).

lifespan_shutdown_at_stop(_Config) ->
    ok = py:exec(<<"import asgi_apps; asgi_apps.startups.clear()">>),
    {ok, Srv} = erlpy_http:start(#{app => <<"asgi_apps:state_app">>, port => 0}),
    N = py_asgi:loops(),
    ?assertEqual({ok, lists:duplicate(N, <<"startup">>)}, py:eval(<<"__import__('asgi_apps').startups">>)),
    erlpy_http:stop(Srv),
    ?assertEqual({ok, lists:duplicate(N, <<"startup">>) ++ lists:duplicate(N, <<"shutdown">>)},
                 py:eval(<<"__import__('asgi_apps').startups">>)).

app_without_lifespan(_Config) ->
    {ok, Srv} = erlpy_http:start(#{app => <<"asgi_apps:no_lifespan">>, port => 0}),
    ?assertEqual("no lifespan here", curl(url_port(erlpy_http:port(Srv), "/"))),
    erlpy_http:stop(Srv).

interface_option(_Config) ->
    %% The object app, named explicitly; a WSGI app forced to WSGI.
    {ok, A} = erlpy_http:start(#{app => <<"asgi_apps:obj_app">>, port => 0, interface => asgi}),
    ?assertEqual("Hello, World!", curl(url_port(erlpy_http:port(A), "/hello"))),
    erlpy_http:stop(A),
    {ok, W} = erlpy_http:start(#{app => <<"asgi_apps:wsgi_app">>, port => 0, interface => wsgi}),
    ?assertEqual("wsgi here", curl(url_port(erlpy_http:port(W), "/"))),
    erlpy_http:stop(W),
    ?assertError(badarg, erlpy_http:start(#{app => <<"asgi_apps:app">>, port => 0, interface => cgi})),
    %% An app that does not load, forced to ASGI: no start.
    ?assertMatch({error, {lifespan_startup_failed, <<"cannot load the app: ModuleNotFoundError", _/binary>>}},
                 erlpy_http:start(#{app => <<"no_such_module:app">>, port => 0, interface => asgi})).

wsgi_and_asgi_in_one_node(Config) ->
    {ok, W} = erlpy_http:start(#{app => <<"http_apps:app">>, port => 0}),
    ?assertEqual("Hello, World!", curl(url_port(erlpy_http:port(W), "/hello"))),
    ?assertEqual("Hello, World!", curl(url(Config, "/hello"))),
    %% And py:call still has a worker of its own.
    ?assertEqual({ok, 3}, py:eval(any, <<"1 + 2">>, #{}, #{timeout => 10000})),
    erlpy_http:stop(W).

%% A connection process killed in mid-request: its task is cancelled, the
%% loop serves on.
loop_survives_conn_kill(Config) ->
    Before = asgi_conns(),
    S = connect(?config(port, Config)),
    ok = gen_tcp:send(S, <<"GET /forever?kill1 HTTP/1.1\r\nHost: x\r\n\r\n">>),
    wait_event(asgi_apps, <<"kill1">>, <<"started">>),
    [exit(P, kill) || P <- asgi_conns() -- Before],
    wait_event(asgi_apps, <<"kill1">>, <<"cancelled">>),
    gen_tcp:close(S),
    ?assertEqual("Hello, World!", curl(url(Config, "/hello"))).

asgi_conns() ->
    [P || P <- processes(), is_asgi_conn(P)].

%% ------------------------------------------------------------------ frameworks

starlette_basics(_Config) ->
    ok = py:exec(<<"import starlette_apps; starlette_apps.events.clear()">>),
    {ok, Srv} = erlpy_http:start(#{app => <<"starlette_apps:app">>, port => 0}),
    Port = erlpy_http:port(Srv),
    ?assertEqual("Hello from Starlette", curl(url_port(Port, "/hello"))),
    ?assertEqual("state from lifespan", curl(url_port(Port, "/state"))),
    Numbers = curl(url_port(Port, "/streaming")),
    ?assertEqual([integer_to_list(I) || I <- lists:seq(0, 999)], string:lexemes(Numbers, "\n")),
    ?assertEqual("{\"a\":\"1\",\"b\":\"two\"}", curl("-d a=1 -d b=two " ++ url_port(Port, "/form"))),
    N = py_asgi:loops(),
    erlpy_http:stop(Srv),
    ?assertEqual({ok, lists:duplicate(N, <<"startup">>) ++ lists:duplicate(N, <<"shutdown">>)},
                 py:eval(<<"__import__('starlette_apps').events">>)).

starlette_upload_1gib(Config) ->
    {File, Hex} = gib_file(Config),
    {ok, Srv} = erlpy_http:start(#{app => <<"starlette_apps:app">>, port => 0}),
    Out = curl("-H 'Expect:' -X POST -T " ++ File ++ " " ++ url_port(erlpy_http:port(Srv), "/stream_sha256")),
    ?assertEqual("1073741824 " ++ Hex, Out),
    erlpy_http:stop(Srv).

fastapi_json_form_upload(Config) ->
    {ok, Srv} = erlpy_http:start(#{app => <<"fastapi_apps:app">>, port => 0}),
    Port = erlpy_http:port(Srv),
    ?assertEqual("{\"hello\":\"world\"}", curl(url_port(Port, "/hello"))),
    ?assertEqual("{\"got\":{\"a\":[1,2]},\"keys\":1}",
                 curl("-H 'Content-Type: application/json' -d '{\"a\": [1, 2]}' " ++ url_port(Port, "/json"))),
    ?assertEqual("{\"name\":\"Ada\",\"age\":36}", curl("-d name=Ada -d age=36 " ++ url_port(Port, "/form"))),
    File = filename:join(?config(priv_dir, Config), "upload.bin"),
    ok = file:write_file(File, crypto:strong_rand_bytes(3 bsl 20 + 7)),
    Out = curl("-F file=@" ++ File ++ " -F note=hi " ++ url_port(Port, "/upload")),
    {ok, #{<<"filename">> := <<"upload.bin">>, <<"size">> := Size, <<"sha256">> := Sum, <<"note">> := <<"hi">>}}
        = py:call(json, loads, [list_to_binary(Out)]),
    ?assertEqual({3 bsl 20 + 7, list_to_binary(sha256_file(File))}, {Size, Sum}),
    file:delete(File),
    erlpy_http:stop(Srv).

fastapi_errors_and_background(_Config) ->
    {ok, Srv} = erlpy_http:start(#{app => <<"fastapi_apps:app">>, port => 0}),
    Port = erlpy_http:port(Srv),
    Out = curl("-i " ++ url_port(Port, "/items/2")),
    ?assertMatch("HTTP/1.1 404 Not Found" ++ _, Out),
    ?assertNotEqual(nomatch, string:find(Out, "{\"detail\":\"no such item\"}")),
    ?assertMatch("HTTP/1.1 422" ++ _, curl("-i " ++ url_port(Port, "/items/abc"))),
    ?assertEqual("{\"queued\":\"bg2\"}", curl(url_port(Port, "/background?key=bg2"))),
    wait_event(fastapi_apps, <<"bg2">>, <<"done">>),
    erlpy_http:stop(Srv).

fastapi_stream_upload_chunked_1gib(Config) ->
    {File, Hex} = gib_file(Config),
    {ok, Srv} = erlpy_http:start(#{app => <<"fastapi_apps:app">>, port => 0}),
    Out = curl("-H 'Expect:' -H 'Transfer-Encoding: chunked' -X POST -T " ++ File ++ " "
               ++ url_port(erlpy_http:port(Srv), "/stream_sha256")),
    ?assertEqual("1073741824 " ++ Hex, Out),
    erlpy_http:stop(Srv).

fastapi_streaming_response(_Config) ->
    {ok, Srv} = erlpy_http:start(#{app => <<"fastapi_apps:app">>, port => 0}),
    Out = curl(url_port(erlpy_http:port(Srv), "/streaming?n=500")),
    ?assertEqual(["line " ++ integer_to_list(I) || I <- lists:seq(0, 499)], string:lexemes(Out, "\n")),
    erlpy_http:stop(Srv).

fastapi_is_disconnected(_Config) ->
    {ok, Srv} = erlpy_http:start(#{app => <<"fastapi_apps:app">>, port => 0}),
    S = connect(erlpy_http:port(Srv)),
    ok = gen_tcp:send(S, <<"GET /watch?key=w1 HTTP/1.1\r\nHost: x\r\n\r\n">>),
    timer:sleep(300),
    ?assertEqual(none, event(fastapi_apps, <<"w1">>)),
    gen_tcp:close(S),
    wait_event(fastapi_apps, <<"w1">>, <<"noticed">>),
    erlpy_http:stop(Srv).

quart_app(Config) ->
    ok = py:exec(<<"import quart_apps; quart_apps.events.clear()">>),
    {ok, Srv} = erlpy_http:start(#{app => <<"quart_apps:app">>, port => 0}),
    Port = erlpy_http:port(Srv),
    ?assertEqual("Hello from Quart", curl(url_port(Port, "/hello"))),
    ?assertEqual("{\"got\":{\"x\":1}}\n" , ensure_nl(curl("-H 'Content-Type: application/json' -d '{\"x\": 1}' "
                                                        ++ url_port(Port, "/json")))),
    File = filename:join(?config(priv_dir, Config), "quart.bin"),
    ok = file:write_file(File, crypto:strong_rand_bytes(100000)),
    Out = curl("-F f=@" ++ File ++ " -F name=q " ++ url_port(Port, "/form")),
    {ok, #{<<"name">> := <<"q">>, <<"f">> := #{<<"size">> := 100000, <<"sha256">> := Sum}}}
        = py:call(json, loads, [list_to_binary(Out)]),
    ?assertEqual(list_to_binary(sha256_file(File)), Sum),
    ?assertEqual(100, length(string:lexemes(curl(url_port(Port, "/streaming")), "\n"))),
    erlpy_http:stop(Srv),
    file:delete(File),
    {ok, Events} = py:eval(<<"__import__('quart_apps').events">>),
    ?assert(lists:member(<<"before_serving">>, Events)),
    ?assert(lists:member(<<"after_serving">>, Events)).

ensure_nl(S) ->
    case lists:last(S) of $\n -> S; _ -> S ++ "\n" end.

%% ------------------------------------------------------------------ load

%% 2,000 requests in flight at once, each awaiting asyncio.sleep(1), with
%% the server's defaults: all answered.
concurrent_2000_sleeps(_Config) ->
    {ok, Srv} = erlpy_http:start(#{app => <<"asgi_apps:app">>, port => 0}),
    Port = erlpy_http:port(Srv),
    Self = self(),
    T0 = erlang:monotonic_time(millisecond),
    Pids = [spawn_link(fun() -> Self ! {done, self(), one_request(Port, <<"/sleep">>)} end)
            || _ <- lists:seq(1, 2000)],
    Results = [receive {done, P, R} -> R end || P <- Pids],
    ct:pal("2000 concurrent sleep(1) requests answered in ~b ms", [erlang:monotonic_time(millisecond) - T0]),
    ?assertEqual(lists:duplicate(2000, {200, <<"slept">>}), Results),
    erlpy_http:stop(Srv).

one_request(Port, Path) ->
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {active, false}], 60000),
    ok = gen_tcp:send(S, [<<"GET ">>, Path, <<" HTTP/1.1\r\nHost: x\r\n\r\n">>]),
    {ok, {Status, _, Body}} = read_response(S),
    gen_tcp:close(S),
    {Status, Body}.

%% 500 clients trickle request bodies into the app's receive(); a plain
%% GET is still answered (its latency is printed, not asserted).
trickling_uploads_do_not_stall_get(_Config) ->
    {ok, Srv} = erlpy_http:start(#{app => <<"asgi_apps:app">>, port => 0, buffer_body => 0}),
    Port = erlpy_http:port(Srv),
    Idle = [get_latency(Port) || _ <- lists:seq(1, 20)],
    Self = self(),
    Tricklers = [spawn_link(fun() -> trickle(Port, Self) end) || _ <- lists:seq(1, 500)],
    [receive {trickling, P} -> ok end || P <- Tricklers],
    Busy = [get_latency(Port) || _ <- lists:seq(1, 20)],
    [P ! stop || P <- Tricklers],
    Answers = [receive {trickled, P, R} -> R end || P <- Tricklers],
    ct:pal("GET latency (us), median of 20: idle ~b, with 500 trickling uploads ~b",
           [median(Idle), median(Busy)]),
    ?assertEqual(lists:duplicate(500, 200), Answers),
    erlpy_http:stop(Srv).

get_latency(Port) ->
    T0 = erlang:monotonic_time(microsecond),
    {200, <<"Hello, World!">>} = one_request(Port, <<"/hello">>),
    erlang:monotonic_time(microsecond) - T0.

median(L) ->
    lists:nth(length(L) div 2 + 1, lists:sort(L)).

%% A body of 64 KiB sent 2 KiB at a time every 50 ms (within min_body_rate)
%% until told to stop, then the rest at once.
trickle(Port, Parent) ->
    S = connect(Port),
    ok = gen_tcp:send(S, <<"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 65536\r\n\r\n">>),
    ok = gen_tcp:send(S, binary:copy(<<"t">>, 2048)),
    Parent ! {trickling, self()},
    Sent = trickle_loop(S, 2048),
    ok = gen_tcp:send(S, binary:copy(<<"t">>, 65536 - Sent)),
    {ok, {Status, _, _}} = read_response(S),
    gen_tcp:close(S),
    Parent ! {trickled, self(), Status}.

trickle_loop(_S, Sent) when Sent >= 65536 - 2048 ->
    receive stop -> Sent end;
trickle_loop(S, Sent) ->
    receive
        stop -> Sent
    after 50 ->
            ok = gen_tcp:send(S, binary:copy(<<"t">>, 2048)),
            trickle_loop(S, Sent + 2048)
    end.

%% ------------------------------------------------------------------ helpers

sha256_file(File) ->
    {ok, Out} = {ok, os:cmd("sha256sum " ++ File)},
    hd(string:lexemes(Out, " ")).

gib_file(Config) ->
    erlpy_test:gib_file(?config(priv_dir, Config)).

%% One response off a socket: {ok, {Status, Headers, Body}} (Content-Length
%% or chunked framing; interim 1xx skipped).
read_response(S) ->
    read_response(S, <<>>).

read_response(S, Acc) ->
    case binary:split(Acc, <<"\r\n\r\n">>) of
        [Head, Rest] ->
            [StatusLine | Lines] = binary:split(Head, <<"\r\n">>, [global]),
            [_, Code | _] = binary:split(StatusLine, <<" ">>, [global]),
            Status = binary_to_integer(Code),
            Headers = [begin [N, V] = binary:split(L, <<": ">>), {string:lowercase(N), V} end || L <- Lines],
            if
                Status < 200 -> read_response(S, Rest);
                true -> body(S, Status, Headers, Rest)
            end;
        [_] ->
            {ok, More} = gen_tcp:recv(S, 0, 60000),
            read_response(S, <<Acc/binary, More/binary>>)
    end.

body(S, Status, Headers, Rest) ->
    case lists:keyfind(<<"content-length">>, 1, Headers) of
        {_, L} ->
            Len = binary_to_integer(L),
            {ok, {Status, Headers, binary:part(need(S, Rest, Len), 0, Len)}};
        false ->
            {ok, {Status, Headers, chunks(S, Rest, <<>>)}}
    end.

%% Data with at least N bytes, receiving more as needed.
need(_S, Data, N) when byte_size(Data) >= N ->
    Data;
need(S, Data, N) ->
    {ok, More} = gen_tcp:recv(S, 0, 60000),
    need(S, <<Data/binary, More/binary>>, N).

chunks(S, Data, Acc) ->
    case binary:split(Data, <<"\r\n">>) of
        [SizeLine, Rest] ->
            case binary_to_integer(hd(binary:split(SizeLine, <<";">>)), 16) of
                0 -> Acc;
                Size ->
                    <<C:Size/binary, "\r\n", Rest2/binary>> = need(S, Rest, Size + 2),
                    chunks(S, Rest2, <<Acc/binary, C/binary>>)
            end;
        [_] ->
            {ok, More} = gen_tcp:recv(S, 0, 60000),
            chunks(S, <<Data/binary, More/binary>>, Acc)
    end.
