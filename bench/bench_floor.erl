%% @doc The floor under erlpy's request path (bench/bench_floor.py): a
%% keep-alive HTTP/1.1 hello server in plain Erlang, one process per
%% connection as erlpy's, that does a chosen part of erlpy's per-request
%% work before it answers.  What each step costs in CPU per request, against
%% uWSGI in the same run, tells where erlpy's cost is.
%%
%% A request with `Connection: close' is answered, then the connection
%% closed (bench_floor.py --close).
%%
%% Modes: `none' (parse the head with erlang:decode_packet/3, answer),
%% `call' (plus one py:call(operator, add, [1, 2]): the trip to a Python
%% worker and back), `environ' (plus the WSGI environ built by
%% py_wsgi:environ/1 and passed to Python), `wsgi' (plus the app run by
%% py_wsgi:run/5, bench/wsgi_bench_app.py).
-module(bench_floor).
-export([main/1]).

-spec main([string()]) -> no_return().
main([PortS, ModeS]) ->
    Mode = list_to_atom(ModeS),
    Mode =:= none orelse begin {ok, _} = application:ensure_all_started(erlpy) end,
    {ok, L} = gen_tcp:listen(list_to_integer(PortS), [binary, {active, false}, {reuseaddr, true},
                                                      {backlog, 1024}, {nodelay, true}]),
    [spawn_link(fun() -> accept(L, Mode) end) || _ <- [1, 2]],
    receive stop -> halt(0) end.

accept(L, Mode) ->
    {ok, S} = gen_tcp:accept(L),
    P = spawn(fun() -> receive go -> loop(S, Mode, <<>>) end end),
    ok = gen_tcp:controlling_process(S, P),
    P ! go,
    accept(L, Mode).

loop(S, Mode, <<>>) ->
    ok = inet:setopts(S, [{active, once}]),
    receive
        {tcp, S, Data} -> request(S, Mode, Data);
        _ -> gen_tcp:close(S)
    end;
loop(S, Mode, Bytes) ->
    request(S, Mode, Bytes).

request(S, Mode, Bytes) ->
    case erlang:decode_packet(http_bin, Bytes, []) of
        {ok, {http_request, Method, {abs_path, Path}, _}, Rest} -> headers(S, Mode, Rest, {Method, Path}, []);
        {more, _} -> request(S, Mode, more(S, Bytes))
    end.

headers(S, Mode, Bytes, Line, Acc) ->
    case erlang:decode_packet(httph_bin, Bytes, []) of
        {ok, http_eoh, Rest} ->
            Close = lists:member({<<"Connection">>, <<"close">>}, Acc),
            ok = gen_tcp:send(S, [<<"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                    "Content-Length: 13\r\nDate: Mon, 30 Nov 2026 14:00:00 GMT\r\n">>,
                                  [<<"Connection: close\r\n">> || Close], <<"\r\n">>,
                                  work(Mode, Line, lists:reverse(Acc))]),
            case Close of
                true -> gen_tcp:close(S);
                false -> loop(S, Mode, Rest)
            end;
        {ok, {http_header, _, Name, _, Value}, Rest} ->
            N = if is_atom(Name) -> atom_to_binary(Name); true -> Name end,
            headers(S, Mode, Rest, Line, [{N, Value} | Acc]);
        {more, _} ->
            headers(S, Mode, more(S, Bytes), Line, Acc)
    end.

more(S, Bytes) ->
    {ok, Data} = gen_tcp:recv(S, 0),
    <<Bytes/binary, Data/binary>>.

work(none, _Line, _Headers) ->
    <<"Hello, World!">>;
work(call, _Line, _Headers) ->
    {ok, 3} = py:call(operator, add, [1, 2]),
    <<"Hello, World!">>;
work(environ, Line, Headers) ->
    {ok, _} = py:call(operator, length_hint, [environ(Line, Headers)]),
    <<"Hello, World!">>;
work(wsgi, Line, Headers) ->
    Handler = fun({body, B}, _) -> {ok, B}; (_, Acc) -> {ok, Acc} end,
    {ok, Body} = py_wsgi:run(<<"wsgi_bench_app:app">>, environ(Line, Headers), none, {Handler, <<>>}, #{}),
    Body.

environ({Method, Path}, Headers) ->
    py_wsgi:environ(#{method => atom_to_binary(Method), path => Path, version => {1, 1},
                      headers => Headers, server_name => <<"localhost">>, server_port => 80,
                      remote_addr => <<"127.0.0.1">>, remote_port => 1}).
