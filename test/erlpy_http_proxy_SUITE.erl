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
     forwarded_for_skips_trusted_proxies, flask_behind_a_proxy, asgi_scope_behind_a_proxy, bad_options,
     cli_options].

init_per_suite(Config) ->
    erlpy_test:start(Config).

end_per_suite(Config) ->
    erlpy_test:stop(Config).

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
                         {proxy_headers, yes}, {root_path, "/api"}]].

cli_options(_Config) ->
    {serve, #{http := H}} = erlpy_cli:parse(["serve", "m:app", "--forwarded-allow-ips", "10.0.0.1, ::1",
                                             "--root-path", "/api/", "--no-proxy-headers"]),
    ?assertMatch(#{forwarded_allow_ips := [{10, 0, 0, 1}, {0, 0, 0, 0, 0, 0, 0, 1}], root_path := <<"/api">>,
                   proxy_headers := false}, H),
    ?assertMatch({serve, #{http := #{forwarded_allow_ips := all}}},
                 erlpy_cli:parse(["serve", "m:app", "--forwarded-allow-ips", "*"])),
    ?assertMatch({error, "--forwarded-allow-ips: not an IP address: nope"},
                 erlpy_cli:parse(["serve", "m:app", "--forwarded-allow-ips", "nope"])).

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
