%% Header semantics of the HTTP/1.1 server (PEP 3333, RFC 9110/9112): what
%% happens to the fields an app sends, the encoding of headers and reason
%% phrases, SERVER_NAME, and the Date of every response.  The apps are in
%% test/python/header_apps.py; responses are read as raw bytes and parsed
%% strictly (erlpy_test_http).
-module(erlpy_http_headers_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-compile([export_all, nowarn_export_all]).

-define(HOP_BY_HOP, [<<"connection">>, <<"keep-alive">>, <<"proxy-connection">>, <<"te">>,
                     <<"trailer">>, <<"transfer-encoding">>, <<"upgrade">>, <<"proxy-authenticate">>]).

all() ->
    [hop_by_hop_fields_dropped, app_transfer_encoding_with_httpx, app_connection_close,
     app_connection_close_http10, one_date_the_apps, one_date_the_servers,
     latin1_headers_and_reason, above_latin1_is_an_app_error, server_name_ipv6_host,
     flask_send_file_one_date, server_name_without_host, server_name_ipv6_listener, server_responses_have_date,
     server_408_and_503_have_date, head_refused_without_body, app_content_length_once,
     no_content_has_no_length].

init_per_suite(Config) ->
    Config2 = erlpy_test:start(Config),
    {ok, Server} = erlpy_http:start(#{app => <<"header_apps:app">>, port => 0, max_body => 100,
                                      max_headers => 10, access_log => false}),
    [{server, Server}, {port, erlpy_http:port(Server)} | Config2].

end_per_suite(Config) ->
    erlpy_http:stop(?config(server, Config)),
    erlpy_test:stop(Config).

%% ------------------------------------------------------------------ helpers

%% Requests (one packet, half-closed after) and the responses, parsed.
exchange(Config, Requests) ->
    {ok, _, Bytes} = erlpy_test_http:exchange(?config(port, Config), [iolist_to_binary(Requests)]),
    {ok, Responses} = erlpy_test_http:responses(Bytes, [erlpy_test_http:method(iolist_to_binary(Requests))]),
    {Responses, Bytes}.

request(Path) ->
    [<<"GET ">>, Path, <<" HTTP/1.1\r\nHost: x\r\n\r\n">>].

values(Name, Headers) ->
    [V || {N, V} <- Headers, N =:= Name].

served() ->
    {ok, Served} = py:eval(<<"__import__('header_apps').served">>),
    Served.

%% ------------------------------------------------------------------ hop-by-hop

%% The app's hop-by-hop fields are dropped; the framing and the connection
%% are the server's: one Transfer-Encoding (its own), and the connection
%% stays open although the app said `Connection: keep-alive' on a response
%% it has no say over.
hop_by_hop_fields_dropped(Config) ->
    {[{200, H1, Body1}, {200, H2, Body2}], _} = exchange(Config, [request(<<"/hop">>), request(<<"/hop-length">>)]),
    ?assertEqual(<<"hop-by-hop">>, Body1),
    ?assertEqual([<<"chunked">>], values(<<"transfer-encoding">>, H1)),
    ?assertEqual([<<"yes">>], values(<<"x-kept">>, H1)),
    ?assertEqual([], [N || {N, _} <- H1, lists:member(N, ?HOP_BY_HOP), N =/= <<"transfer-encoding">>]),
    %% With the app's Content-Length: no Transfer-Encoding at all.
    ?assertEqual(<<"hop">>, Body2),
    ?assertEqual([<<"3">>], values(<<"content-length">>, H2)),
    ?assertEqual([], [N || {N, _} <- H2, lists:member(N, ?HOP_BY_HOP)]).

%% httpx refuses a response with Transfer-Encoding twice (issue 9).
app_transfer_encoding_with_httpx(Config) ->
    Script = "import httpx, sys\n"
             "with httpx.Client() as c:\n"
             "    r = c.get('http://127.0.0.1:%s/hop' % sys.argv[1])\n"
             "    print(r.status_code, r.headers['transfer-encoding'], r.text)\n",
    case os:cmd("/usr/bin/python3 -c 'import httpx' 2>&1") of
        [] ->
            File = filename:join(?config(priv_dir, Config), "httpx_client.py"),
            ok = file:write_file(File, Script),
            Out = os:cmd("/usr/bin/python3 " ++ File ++ " " ++ integer_to_list(?config(port, Config)) ++ " 2>&1"),
            ?assertEqual("200 chunked hop-by-hop\n", Out);
        _ ->
            {skip, "httpx is not installed for /usr/bin/python3 (Debian: python3-httpx)"}
    end.

%% The app's `Connection: close': the connection closes after its
%% response, and the request pipelined behind it is not served.
app_connection_close(Config) ->
    {ok, _} = py:eval(<<"__import__('header_apps').served.clear()">>),
    {[{200, H, <<"closing">>}], _} = exchange(Config, [request(<<"/close">>), request(<<"/after-close">>)]),
    ?assertEqual([<<"close">>], values(<<"connection">>, H)),
    ?assertEqual([<<"/close">>], served()).

app_connection_close_http10(Config) ->
    {[{200, H, <<"closing">>}], _} =
        exchange(Config, [<<"GET /close HTTP/1.0\r\nConnection: keep-alive\r\n\r\n">>, request(<<"/hello">>)]),
    ?assertEqual([<<"close">>], values(<<"connection">>, H)).

%% ------------------------------------------------------------------ Date

%% An app's Date goes out instead of the server's, once.
one_date_the_apps(Config) ->
    {[{200, H, <<"date">>}], _} = exchange(Config, request(<<"/date">>)),
    ?assertEqual([<<"Tue, 15 Nov 1994 08:12:31 GMT">>], values(<<"date">>, H)).

one_date_the_servers(Config) ->
    {[{200, H, <<"hello">>}], _} = exchange(Config, request(<<"/hello">>)),
    [Date] = values(<<"date">>, H),
    ?assertMatch({{_, _, _}, {_, _, _}}, httpd_util:convert_request_date(binary_to_list(Date))).

%% Werkzeug's send_file sets a Date: it is the only one.
flask_send_file_one_date(_Config) ->
    case py:eval(<<"__import__('importlib.util').util.find_spec('flask') is not None">>) of
        {ok, true} ->
            {ok, Server} = erlpy_http:start(#{app => <<"header_apps:flask_app">>, port => 0}),
            try
                Port = erlpy_http:port(Server),
                {ok, _, Bytes} = erlpy_test_http:exchange(Port, [request(<<"/file">>)]),
                %% erlpy_test_http refuses a response with two Date fields.
                {ok, [{200, H, <<"data">>}]} = erlpy_test_http:responses(Bytes, [<<"GET">>]),
                ?assertEqual([<<"Thu, 01 Jan 1970 00:00:00 GMT">>], values(<<"last-modified">>, H))
            after
                erlpy_http:stop(Server)
            end;
        {ok, false} ->
            {skip, "Flask is not installed for this Python (Debian: python3-flask)"}
    end.

%% ------------------------------------------------------------------ ISO-8859-1

%% PEP 3333: header values and the reason phrase are ISO-8859-1 text, and go
%% out as those bytes (é is the byte 0xE9, not UTF-8's two).
latin1_headers_and_reason(Config) ->
    {[{200, H, <<"ok">>}], Bytes} = exchange(Config, request(<<"/latin1">>)),
    ?assertMatch(<<"HTTP/1.1 200 Tr", 16#e8, "s bien\r\n", _/binary>>, Bytes),
    ?assertEqual([<<"caf", 16#e9>>], values(<<"x-name">>, H)),
    %% Python's own client reads it back as the app wrote it.
    Script = "import http.client, sys\n"
             "c = http.client.HTTPConnection('127.0.0.1', int(sys.argv[1]))\n"
             "c.request('GET', '/latin1'); r = c.getresponse()\n"
             "print(ascii(r.reason), ascii(r.getheader('X-Name')))\n",
    File = filename:join(?config(priv_dir, Config), "latin1_client.py"),
    ok = file:write_file(File, Script),
    ?assertEqual("'Tr\\xe8s bien' 'caf\\xe9'\n",
                 os:cmd("/usr/bin/python3 " ++ File ++ " " ++ integer_to_list(?config(port, Config)))).

%% A character above U+00FF in a header or the status has no ISO-8859-1
%% byte: an app error, answered 500 and logged.
above_latin1_is_an_app_error(Config) ->
    ok = logger:add_handler(headers_capture, ?MODULE, #{config => self()}),
    try
        [begin
             {[{500, _, _}], Bytes} = exchange(Config, request(Path)),
             ?assertEqual(nomatch, binary:match(Bytes, <<"never sent">>)),
             receive
                 {logged, error, Text} -> ?assertNotEqual(nomatch, string:find(Text, "U+00FF"))
             after 5000 -> ct:fail({not_logged, Path})
             end
         end || Path <- [<<"/above-latin1-value">>, <<"/above-latin1-status">>]]
    after
        logger:remove_handler(headers_capture)
    end.

%% logger handler callback for above_latin1_is_an_app_error
log(#{level := Level, msg := Msg}, #{config := Pid}) ->
    Text = case Msg of
               {string, S} -> S;
               {report, R} -> io_lib:format("~p", [R]);
               {F, A} -> io_lib:format(F, A)
           end,
    Pid ! {logged, Level, lists:flatten(io_lib:format("~ts", [Text]))}.

%% ------------------------------------------------------------------ SERVER_NAME

environ(Config, Request) ->
    {[{200, _, Json}], _} = exchange(Config, Request),
    {ok, Environ} = py:call(json, loads, [Json]),
    Environ.

%% SERVER_NAME is the Host without its port, an IPv6 literal with its
%% brackets (RFC 3875 4.1.14); SERVER_PORT is the port the server listens
%% on, as gunicorn gives it.
server_name_ipv6_host(Config) ->
    Port = integer_to_binary(?config(port, Config)),
    Req = fun(Host) -> [<<"GET /environ HTTP/1.1\r\nHost: ">>, Host, <<"\r\n\r\n">>] end,
    ?assertEqual(#{<<"SERVER_NAME">> => <<"[::1]">>, <<"SERVER_PORT">> => Port,
                   <<"HTTP_HOST">> => <<"[::1]:8080">>}, environ(Config, Req(<<"[::1]:8080">>))),
    ?assertMatch(#{<<"SERVER_NAME">> := <<"[::1]">>}, environ(Config, Req(<<"[::1]">>))),
    ?assertMatch(#{<<"SERVER_NAME">> := <<"example.com">>, <<"SERVER_PORT">> := Port},
                 environ(Config, Req(<<"example.com:81">>))),
    ?assertMatch(#{<<"SERVER_NAME">> := <<"example.com">>}, environ(Config, Req(<<"example.com">>))).

%% Without a Host (HTTP/1.0), or with an empty one: the address the client
%% connected to.
server_name_without_host(Config) ->
    Port = integer_to_binary(?config(port, Config)),
    ?assertMatch(#{<<"SERVER_NAME">> := <<"127.0.0.1">>, <<"SERVER_PORT">> := Port},
                 environ(Config, <<"GET /environ HTTP/1.0\r\n\r\n">>)),
    ?assertMatch(#{<<"SERVER_NAME">> := <<"127.0.0.1">>},
                 environ(Config, <<"GET /environ HTTP/1.1\r\nHost:\r\n\r\n">>)).

server_name_ipv6_listener(_Config) ->
    case erlpy_http:start(#{app => <<"header_apps:app">>, port => 0, ip => {0, 0, 0, 0, 0, 0, 0, 1}}) of
        {ok, Server} ->
            try
                Port = erlpy_http:port(Server),
                {ok, _, Bytes} = erlpy_test_http:exchange(Port, [<<"GET /environ HTTP/1.0\r\n\r\n">>],
                                                          #{ip => {0, 0, 0, 0, 0, 0, 0, 1}}),
                {ok, [{200, _, Json}]} = erlpy_test_http:responses(Bytes, [<<"GET">>]),
                {ok, Environ} = py:call(json, loads, [Json]),
                ?assertMatch(#{<<"SERVER_NAME">> := <<"[::1]">>}, Environ)
            after
                erlpy_http:stop(Server)
            end;
        {error, Reason} ->
            {skip, {no_ipv6_loopback, Reason}}
    end.

%% ------------------------------------------------------------------ the server's own responses

%% Every response the server makes itself has a Date (RFC 9110 6.6.1), as
%% the app's responses do.  erlpy_test_http checks there is exactly one.
server_responses_have_date(Config) ->
    Cases = [{400, <<"GET / HTTP/1.1\r\n\r\n">>},                          % no Host
             {413, <<"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n">>},
             {414, [<<"GET /">>, binary:copy(<<"a">>, 70000), <<" HTTP/1.1\r\nHost: x\r\n\r\n">>]},
             {417, <<"GET / HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n">>},
             {431, [<<"GET / HTTP/1.1\r\nHost: x\r\n">>, lists:duplicate(11, <<"X: y\r\n">>), <<"\r\n">>]},
             {500, request(<<"/raise">>)},
             {501, <<"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n">>},
             {505, <<"GET / HTTP/2.0\r\nHost: x\r\n\r\n">>}],
    ok = logger:set_module_level(erlpy_http_conn, critical),  % the 500's traceback
    try
        [?assertMatch({[{Code, [_ | _], _}], _}, exchange(Config, Request)) || {Code, Request} <- Cases]
    after
        logger:unset_module_level(erlpy_http_conn)
    end.

%% 408 (the head never completes) and 503 (over max_connections).
server_408_and_503_have_date(_Config) ->
    {ok, Server} = erlpy_http:start(#{app => <<"header_apps:app">>, port => 0, header_timeout => 200,
                                      max_connections => 1}),
    try
        Port = erlpy_http:port(Server),
        {ok, _, Timeout} = erlpy_test_http:exchange(Port, [<<"GET / HTTP/1.1\r\n">>], #{half_close => false}),
        ?assertMatch({ok, [{408, _, _}]}, erlpy_test_http:responses(Timeout, [<<"GET">>])),
        erlpy_test:wait_until(fun() -> erlpy_http:connections(Server) =:= 0 end),
        %% One connection held open: the next is refused.
        {ok, Held} = gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {active, false}]),
        erlpy_test:wait_until(fun() -> erlpy_http:connections(Server) =:= 1 end),
        {ok, _, Refused} = erlpy_test_http:exchange(Port, [], #{half_close => false}),
        ?assertMatch({ok, [{503, _, _}]}, erlpy_test_http:responses(Refused, [<<"GET">>])),
        gen_tcp:close(Held)
    after
        erlpy_http:stop(Server)
    end.

%% A response to HEAD has no body (RFC 9110 9.3.2), also when the server
%% refuses the request.
head_refused_without_body(Config) ->
    {[{400, _, <<>>}], Bytes} = exchange(Config, <<"HEAD / HTTP/1.1\r\n\r\n">>),
    ?assertMatch([_, <<>>], binary:split(Bytes, <<"\r\n\r\n">>)),
    %% A chunked body over max_body, found while it is read before the app
    %% starts (the fuzzer's chunked_bodies found the 413 carrying a body).
    Big = <<"HEAD / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1001\r\n\0\r\n0\r\n\r\n">>,
    {[{413, _, <<>>}], Bytes2} = exchange(Config, Big),
    ?assertMatch([_, <<>>], binary:split(Bytes2, <<"\r\n\r\n">>)).

%% Regressions found by the fuzzer (erlpy_http_fuzz_SUITE:app_responses):
%% an app's Content-Length given twice went out twice, and a 204 carried
%% the app's Content-Length and body.
app_content_length_once(Config) ->
    {[{200, H, <<"hello">>}], _} = exchange(Config, request(<<"/two-lengths">>)),
    ?assertEqual([<<"5">>], values(<<"content-length">>, H)).

no_content_has_no_length(Config) ->
    {[{204, H, <<>>}], Bytes} = exchange(Config, request(<<"/no-content">>)),
    ?assertEqual([], values(<<"content-length">>, H)),
    ?assertEqual(nomatch, binary:match(Bytes, <<"body">>)).
