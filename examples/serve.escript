#!/usr/bin/env escript
%%! -pa _build/default/lib/erlpy/ebin
%% `make run`: serves a WSGI app over HTTP/1.1.
%%   APP=module:callable (default demo_app:app from examples/), PORT (8080),
%%   HOST (127.0.0.1).  The current directory and examples/ are on sys.path.
main(_) ->
    App = env("APP", "demo_app:app"),
    Port = list_to_integer(env("PORT", "8080")),
    {ok, Ip} = inet:parse_address(env("HOST", "127.0.0.1")),
    {ok, Cwd} = file:get_cwd(),
    ok = application:load(erlpy),
    ok = application:set_env(erlpy, python_path, [Cwd, filename:join(Cwd, "examples")]),
    {ok, _} = application:ensure_all_started(erlpy),
    case erlpy_http:start(#{app => list_to_binary(App), port => Port, ip => Ip}) of
        {ok, _Server} ->
            io:format("erlpy: serving ~s on http://~s:~b/ (Ctrl-C to stop)~n"
                      "  curl http://~s:~b/~n", [App, inet:ntoa(Ip), Port, inet:ntoa(Ip), Port]),
            receive after infinity -> ok end;
        {error, Reason} ->
            io:format(standard_error, "erlpy: cannot listen on port ~b: ~p~n", [Port, Reason]),
            halt(1)
    end.

env(Name, Default) ->
    case os:getenv(Name) of
        false -> Default;
        "" -> Default;
        Value -> Value
    end.
