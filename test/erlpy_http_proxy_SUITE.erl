%% Behind a reverse proxy (erlpy_http_proxy, options proxy_headers,
%% forwarded_allow_ips, root_path): X-Forwarded-Proto and X-Forwarded-For
%% believed from trusted peers only, the mount point in SCRIPT_NAME and
%% the ASGI root_path, and an unchanged Flask app building its URLs from
%% them.  The suite's client connects from 127.0.0.1, trusted by default.
-module(erlpy_http_proxy_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-compile([export_all, nowarn_export_all]).

all() ->
    [trusted_proxy_sets_scheme_and_client, mount_point, headers_ignored_from_untrusted_peers,
     forwarded_for_skips_trusted_proxies, untrusted_bytes_never_reach_the_app, mount_point_normalised,
     asgi_root_path_utf8, flask_behind_a_proxy, asgi_scope_behind_a_proxy, bad_options, cli_options,
     pipelined_wsgi, pipelined_asgi].

init_per_suite(Config) ->
    erlpy_test:start(Config).

end_per_suite(Config) ->
    erlpy_test:stop(Config).

init_per_testcase(flask_behind_a_proxy, Config) ->
    erlpy_test:need_python_module(flask, Config);
init_per_testcase(_Case, Config) ->
    Config.

end_per_testcase(_Case, _Config) ->
    ok.

-define(PROXIED, [{"X-Forwarded-Proto", "https"}, {"X-Forwarded-For", "203.0.113.9, 10.0.0.2"}]).

trusted_proxy_sets_scheme_and_client(_Config) ->
    with_server(#{}, fun(Port) ->
        ?assertEqual(<<"https">>, env(Port, "wsgi.url_scheme", ?PROXIED)),
        %% 10.0.0.2 is not a trusted proxy: it is the client.
        ?assertEqual(<<"10.0.0.2">>, env(Port, "REMOTE_ADDR", ?PROXIED)),
        ?assertEqual(<<"0">>, env(Port, "REMOTE_PORT", ?PROXIED)),
        %% Without the headers: the peer, plain http.
        ?assertEqual(<<"http">>, env(Port, "wsgi.url_scheme", [])),
        ?assertEqual(<<"127.0.0.1">>, env(Port, "REMOTE_ADDR", [])),
        %% Only https and http are schemes; anything else is http.
        ?assertEqual(<<"http">>, env(Port, "wsgi.url_scheme", [{"X-Forwarded-Proto", "gopher"}])),
        ?assertEqual(<<"https">>, env(Port, "wsgi.url_scheme", [{"X-Forwarded-Proto", " HTTPS , http"}]))
    end).

mount_point(_Config) ->
    with_server(#{root_path => <<"/api">>}, fun(Port) ->
        ?assertEqual(<<"/api">>, env(Port, "/api/header", "SCRIPT_NAME", [])),
        ?assertEqual(<<"/header">>, env(Port, "/api/header", "PATH_INFO", [])),
        %% A path not under the mount point is left whole (http_apps
        %% answers /header only: /apiary/header is not cut to /ary/header).
        ?assertMatch({404, _}, request(Port, "/apiary/header", [])),
        ?assertEqual(<<"/api">>, env(Port, "/api/header", "SCRIPT_NAME", [{"X-Path", "x"}]))
    end).

headers_ignored_from_untrusted_peers(_Config) ->
    [with_server(Opts, fun(Port) ->
         ?assertEqual(<<"http">>, env(Port, "wsgi.url_scheme", ?PROXIED)),
         ?assertEqual(<<"127.0.0.1">>, env(Port, "REMOTE_ADDR", ?PROXIED))
     end) || Opts <- [#{forwarded_allow_ips => []}, #{proxy_headers => false},
                      #{forwarded_allow_ips => [{10, 0, 0, 1}]}]].

forwarded_for_skips_trusted_proxies(_Config) ->
    with_server(#{forwarded_allow_ips => [{127, 0, 0, 1}, {10, 0, 0, 2}]}, fun(Port) ->
        ?assertEqual(<<"203.0.113.9">>, env(Port, "REMOTE_ADDR", ?PROXIED)),
        %% Every entry a trusted proxy: the leftmost.
        ?assertEqual(<<"10.0.0.2">>, env(Port, "REMOTE_ADDR", [{"X-Forwarded-For", "10.0.0.2, 127.0.0.1"}])),
        %% The client's entry is not an address: the peer stays the client.
        ?assertEqual(<<"127.0.0.1">>, env(Port, "REMOTE_ADDR", [{"X-Forwarded-For", "1.2.3.4, unknown"}])),
        %% The last X-Forwarded-For field counts (the proxy's own).
        ?assertEqual(<<"198.51.100.7">>, env(Port, "REMOTE_ADDR", [{"X-Forwarded-For", "1.2.3.4"},
                                                                   {"X-Forwarded-For", "198.51.100.7"}]))
    end),
    with_server(#{forwarded_allow_ips => all}, fun(Port) ->
        ?assertEqual(<<"203.0.113.9">>, env(Port, "REMOTE_ADDR", ?PROXIED))
    end).

%% What a client writes in X-Forwarded-For reaches the app only as an
%% address inet:ntoa/1 wrote: non-ASCII bytes (an IPv6 zone id, or
%% anything when every peer is trusted) never give an ASGI app a 500.
untrusted_bytes_never_reach_the_app(_Config) ->
    [begin
         {ok, Srv} = erlpy_http:start(Opts#{app => <<"asgi_apps:app">>, port => 0, access_log => false}),
         try
             {ok, Scope} = py:call(json, loads, [get(erlpy_http:port(Srv), "/scope", [{"X-Forwarded-For", Value}])]),
             ?assertMatch(#{<<"client">> := [Expected, _]}, Scope)
         after
             erlpy_http:stop(Srv)
         end
     end || {Opts, Value, Expected} <- [{#{forwarded_allow_ips => all}, [16#e9], <<"127.0.0.1">>},
                                         {#{}, "fe80::1%" ++ [16#e9], <<"fe80::1">>},
                                         {#{}, "::FFFF:1.2.3.4", <<"1.2.3.4">>}]],
    with_server(#{forwarded_allow_ips => all}, fun(Port) ->
        ?assertEqual(<<"127.0.0.1">>, env(Port, "REMOTE_ADDR", [{"X-Forwarded-For", "unknown"}]))
    end).

%% A trailing slash is dropped ("/" is no mount point at all: SCRIPT_NAME
%% "/" is not allowed by PEP 3333).
mount_point_normalised(_Config) ->
    with_server(#{root_path => <<"/">>}, fun(Port) ->
        ?assertEqual(<<>>, env(Port, "/header", "SCRIPT_NAME", [])),
        ?assertEqual(<<"/header">>, env(Port, "/header", "PATH_INFO", []))
    end),
    with_server(#{root_path => <<"/api/">>}, fun(Port) ->
        ?assertEqual(<<"/api">>, env(Port, "/api/header", "SCRIPT_NAME", [])),
        ?assertEqual(<<"/header">>, env(Port, "/api/header", "PATH_INFO", []))
    end).

%% A UTF-8 root_path is the prefix of the ASGI path it mounts.
asgi_root_path_utf8(_Config) ->
    {ok, Srv} = erlpy_http:start(#{app => <<"asgi_apps:app">>, port => 0, access_log => false,
                                   root_path => <<"/scope/caf", 16#c3, 16#a9>>}),
    try
        {ok, Scope} = py:call(json, loads, [get(erlpy_http:port(Srv), "/scope/caf%C3%A9%20x", [])]),
        #{<<"path">> := Path, <<"root_path">> := Root} = Scope,
        ?assertEqual(Root, binary:part(Path, 0, byte_size(Root)))
    after
        erlpy_http:stop(Srv)
    end.

%% 27 requests pipelined on one connection, sent 15 ms apart (more
%% messages than the socket's active count), a slow one first and a POST
%% whose body comes in two pieces in the middle: answered in order.
pipelined_wsgi(_Config) ->
    with_server(#{}, fun(Port) -> pipeline(Port, "/late-sha256?0.5", "/sha256") end).

pipelined_asgi(_Config) ->
    {ok, Srv} = erlpy_http:start(#{app => <<"asgi_apps:app">>, port => 0, access_log => false}),
    try pipeline(erlpy_http:port(Srv), "/sleep", "/echo") after erlpy_http:stop(Srv) end.

flask_behind_a_proxy(_Config) ->
    {ok, Srv} = erlpy_http:start(#{app => <<"http_apps:flask_app">>, port => 0, root_path => <<"/api">>,
                                   access_log => false}),
    try
        Port = erlpy_http:port(Srv),
        ?assertEqual(<<"https://example.com/api/url 10.0.0.2">>,
                     get(Port, "/api/url", [{"Host", "example.com"} | ?PROXIED]))
    after
        erlpy_http:stop(Srv)
    end.

asgi_scope_behind_a_proxy(_Config) ->
    {ok, Srv} = erlpy_http:start(#{app => <<"asgi_apps:app">>, port => 0, root_path => <<"/api">>,
                                   access_log => false}),
    try
        Port = erlpy_http:port(Srv),
        {ok, Scope} = py:call(json, loads, [get(Port, "/api/scope", ?PROXIED)]),
        ?assertMatch(#{<<"scheme">> := <<"https">>, <<"client">> := [<<"10.0.0.2">>, 0],
                       <<"root_path">> := <<"/api">>, <<"path">> := <<"/api/scope">>}, Scope)
    after
        erlpy_http:stop(Srv)
    end.

bad_options(_Config) ->
    [?assertError(badarg, erlpy_http:start(#{app => <<"http_apps:app">>, port => 0, Key => Value}))
     || {Key, Value} <- [{forwarded_allow_ips, ["127.0.0.1"]}, {forwarded_allow_ips, any},
                         {forwarded_allow_ips, [{127, 0, 0, 1} | x]}, {proxy_headers, yes},
                         {root_path, "/api"}, {root_path, <<"api">>}]].

cli_options(_Config) ->
    {serve, #{http := H}} = erlpy_cli:parse(["serve", "m:app", "--forwarded-allow-ips", "10.0.0.1, ::1",
                                             "--root-path", "/api/", "--no-proxy-headers"]),
    ?assertMatch(#{forwarded_allow_ips := [{10, 0, 0, 1}, {0, 0, 0, 0, 0, 0, 0, 1}], root_path := <<"/api">>,
                   proxy_headers := false}, H),
    ?assertMatch({serve, #{http := #{forwarded_allow_ips := all}}},
                 erlpy_cli:parse(["serve", "m:app", "--forwarded-allow-ips", "*"])),
    ?assertMatch({error, "--forwarded-allow-ips: not an IP address: nope"},
                 erlpy_cli:parse(["serve", "m:app", "--forwarded-allow-ips", "nope"])),
    ?assertMatch({error, "--root-path: expected a path starting with /, got api"},
                 erlpy_cli:parse(["serve", "m:app", "--root-path", "api"])).

%% ------------------------------------------------------------------ helpers

with_server(Opts, Fun) ->
    {ok, Srv} = erlpy_http:start(Opts#{app => <<"http_apps:app">>, port => 0, access_log => false}),
    try Fun(erlpy_http:port(Srv)) after erlpy_http:stop(Srv) end.

%% An environ value, through http_apps' /header?NAME.
env(Port, Name, Headers) ->
    env(Port, "/header", Name, Headers).

env(Port, Path, Name, Headers) ->
    get(Port, Path ++ "?" ++ Name, Headers).

get(Port, Path, Headers) ->
    {200, Body} = request(Port, Path, Headers),
    Body.

request(Port, Path, Headers) ->
    Head = [["GET ", Path, " HTTP/1.1\r\n"],
            case lists:keymember("Host", 1, Headers) of true -> []; false -> "Host: x\r\n" end,
            [[N, ": ", V, "\r\n"] || {N, V} <- Headers], "Connection: close\r\n\r\n"],
    {ok, _, Bytes} = erlpy_test_http:exchange(Port, [iolist_to_binary(Head)]),
    {ok, [{Status, _, Body}]} = erlpy_test_http:responses(Bytes, [<<"GET">>]),
    {Status, Body}.

pipeline(Port, Slow, Post) ->
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {active, false}, {nodelay, true}]),
    Get = fun(P) -> iolist_to_binary(["GET ", P, " HTTP/1.1\r\nHost: x\r\n\r\n"]) end,
    Pieces = [Get(Slow)] ++ [Get("/hello") || _ <- lists:seq(1, 12)]
        ++ [<<"POST ", (list_to_binary(Post))/binary, " HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n">>,
            <<"01234">>, <<"56789">>]
        ++ [Get("/hello") || _ <- lists:seq(1, 12)]
        ++ [<<"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n">>],
    [begin ok = gen_tcp:send(S, P), timer:sleep(15) end || P <- Pieces],
    {ok, _, Bytes} = erlpy_test_http:recv_all(S, <<>>),
    gen_tcp:close(S),
    Methods = [<<"GET">> || _ <- lists:seq(1, 13)] ++ [<<"POST">>] ++ [<<"GET">> || _ <- lists:seq(1, 13)],
    {ok, Rs} = erlpy_test_http:responses(Bytes, Methods),
    ?assertEqual(27, length(Rs)),
    ?assertEqual(27, length([ok || {200, _, _} <- Rs])),
    ?assertEqual(25, length([ok || {200, _, <<"Hello, World!">>} <- Rs])),
    ?assertNotEqual(<<"Hello, World!">>, element(3, lists:nth(14, Rs))). %% the POST's
