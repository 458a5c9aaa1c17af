%% @doc The erlpy application: starts the Python worker threads (one per
%% context) and the supervisor.  The interpreter itself lives as long as the
%% NIF library, so the application can be stopped and started again.
-module(erlpy_app).
-behaviour(application).

-export([start/2, stop/1]).

%% @doc Starts `contexts' workers (app env, default 8) and adds the app env
%% `python_path' directories to `sys.path'.
-spec start(application:start_type(), term()) -> {ok, pid()} | {error, term()}.
start(_Type, _Args) ->
    Contexts = application:get_env(erlpy, contexts, 8),
    case py_nif:start(Contexts) of
        ok ->
            ok = add_python_path(application:get_env(erlpy, python_path, [])),
            erlpy_sup:start_link();
        {error, _} = Error ->
            Error
    end.

%% @doc Refuses new calls; calls already queued still run.
-spec stop(term()) -> ok.
stop(_State) ->
    py_nif:stop().

add_python_path([]) ->
    ok;
add_python_path(Dirs) ->
    %% Binaries arrive as bytes; sys.path wants str.
    Paths = [unicode:characters_to_binary(D) || D <- Dirs],
    {ok, _} = py:eval(<<"[__import__('sys').path.insert(0, p.decode()) for p in reversed(ps)]">>,
                      #{ps => Paths}),
    ok.
