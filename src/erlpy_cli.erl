%% @private
%% @doc The command line (`bin/erlpy', docs/cli.md): `serve MODULE:CALLABLE'
%% with gunicorn's option names where the meaning is the same.
%%
%% Exit status: 0 stopped (gracefully, or `--help', `--version'); 1 stopped
%% at once by a second signal; 2 bad usage (unknown option, bad value, bad
%% app name); 3 the app cannot be loaded (the Python exception is printed);
%% 4 an address cannot be listened on (in use, not local).
-module(erlpy_cli).

-export([main/0, parse/1]).

-define(USAGE_ERROR, 2).
-define(APP_ERROR, 3).
-define(LISTEN_ERROR, 4).

%% The options that take a value.
-define(VALUED, ["-b", "--bind", "--contexts", "--threads", "--max-body", "--max-connections",
                  "--worker-connections", "--limit-request-fields", "-t", "--timeout", "--header-timeout",
                  "--keep-alive", "--graceful-timeout", "--python-path", "--pythonpath", "--chdir",
                  "--access-log", "--access-logfile", "--log-level", "-w", "--workers", "--max-requests",
                  "--interface", "--forwarded-allow-ips", "--root-path"]).


-define(HELP, "usage: erlpy serve [OPTIONS] MODULE:CALLABLE
       erlpy --help | --version

Serves a Python WSGI or ASGI app over HTTP/1.1.  MODULE:CALLABLE as in
gunicorn (MODULE alone means MODULE:application).

  -b, --bind HOST:PORT       listen there; repeatable (default 127.0.0.1:8000)
      --contexts N, --threads N
                             Python worker threads: requests served at once
                             (default 8; per worker node with --workers)
  -w, --workers N            serve from N worker nodes, each an OS process
                             with its own Python (default 0: this node)
      --max-requests N       with --workers: restart a worker node after
                             about N requests (default: never)
      --max-body BYTES       largest request body: 413 (default: no limit)
      --max-connections N, --worker-connections N
                             open connections per --bind: more get 503
                             (default 4096)
      --limit-request-fields N
                             header fields per request: 431 (default 100)
  -t, --timeout SECONDS      longest wait for request body bytes, or for the
                             client to take response bytes (default 30)
      --header-timeout SECONDS
                             time to send a request's head (default 10)
      --keep-alive SECONDS   idle time allowed between requests on a
                             connection (default 60)
      --graceful-timeout SECONDS
                             on SIGTERM/SIGINT, time requests in flight have
                             to finish (default 30)
      --forwarded-allow-ips IPS
                             proxies trusted for X-Forwarded-Proto and
                             X-Forwarded-For: comma-separated addresses, or
                             '*' for all (default 127.0.0.1,::1)
      --no-proxy-headers     ignore X-Forwarded-* from every peer
      --root-path PATH       where a proxy mounts the app: SCRIPT_NAME, the
                             ASGI root_path (default: none)
      --interface auto|wsgi|asgi
                             how to call the app; auto: ASGI if it is a
                             coroutine function or its __call__ is one
                             (default auto)
      --python-path DIR      add to sys.path; repeatable (--pythonpath DIR,DIR
                             too).  The current directory is always on it
      --chdir DIR            change to DIR first
      --access-log FILE      one line per request to FILE, - for stdout
                             (--access-logfile too; default: none)
      --log-level LEVEL      debug, info, warning, error or critical
                             (default info)
  -h, --help                 this help
  -v, --version              erlpy's version

SIGTERM or SIGINT (Ctrl-C) stops gracefully; a second one stops at once.
Exit status: 0 stopped, 1 stopped at once, 2 bad usage or app name,
3 app failed to load, 4 cannot listen.
").

%% @doc Entry point (`erl -s erlpy_cli main -extra ARGS'); never returns.
-spec main() -> no_return().
main() ->
    Args = init:get_plain_arguments(),
    case parse(Args) of
        help -> io:put_chars(?HELP), halt(0);
        version -> io:format("erlpy ~s~n", [version()]), halt(0);
        {error, Why} -> fail(?USAGE_ERROR, "~ts~nTry 'erlpy --help'.", [Why]);
        {serve, Opts} -> serve(Opts)
    end.

%% ------------------------------------------------------------------ options

-type opts() :: #{app := string(), binds := [string()], http := map(),
                  contexts := pos_integer(), python_path := [string()],
                  chdir := string() | undefined, access_log := string() | undefined,
                  log_level := logger:level()}.

%% @doc Parses the arguments after `erlpy'.
-spec parse([string()]) -> help | version | {serve, opts()} | {error, string()}.
parse(Args) ->
    case lists:any(fun(A) -> lists:member(A, ["-h", "--help"]) end, Args) of
        true -> help;
        false ->
            case Args of
                [V | _] when V =:= "-v"; V =:= "--version" -> version;
                ["serve" | Rest] -> serve_args(Rest);
                [] -> {error, "missing command: erlpy serve MODULE:CALLABLE"};
                [Other | _] -> {error, "unknown command: " ++ Other}
            end
    end.

serve_args(Args) ->
    Init = #{app => undefined, binds => [], http => #{}, contexts => 8, python_path => [],
             chdir => undefined, access_log => undefined, log_level => info},
    try options(Args, Init) of
        #{app := undefined} -> {error, "missing app: erlpy serve MODULE:CALLABLE"};
        #{app := App} = Opts ->
            case app_name(App) of
                ok ->
                    Binds = case maps:get(binds, Opts) of [] -> ["127.0.0.1:8000"]; B -> lists:reverse(B) end,
                    {serve, Opts#{binds := Binds, python_path := lists:reverse(maps:get(python_path, Opts))}};
                error ->
                    {error, "bad app name '" ++ App ++ "': expected MODULE:CALLABLE, "
                     "e.g. myproject.wsgi:application"}
            end
    catch
        throw:{usage, Why} -> {error, Why}
    end.

options([], O) ->
    O;
options([Opt], O) ->
    case lists:member(Opt, ?VALUED) of
        true -> throw({usage, Opt ++ " needs a value"});
        false -> option([Opt], O)
    end;
options(Args, O) ->
    option(Args, O).

option([Opt, V | Rest], O) when Opt =:= "-b"; Opt =:= "--bind" ->
    options(Rest, O#{binds := [V | maps:get(binds, O)]});
option([Opt, V | Rest], O) when Opt =:= "--contexts"; Opt =:= "--threads" ->
    options(Rest, O#{contexts := int(Opt, V, 1)});
option([Opt, V | Rest], O) when Opt =:= "-w"; Opt =:= "--workers" ->
    options(Rest, http(worker_nodes, int(Opt, V, 0), O));
option(["--max-requests", V | Rest], O) -> options(Rest, http(max_requests, int("--max-requests", V, 1), O));
option(["--max-body", V | Rest], O) -> options(Rest, http(max_body, int("--max-body", V, 0), O));
option([Opt, V | Rest], O) when Opt =:= "--max-connections"; Opt =:= "--worker-connections" ->
    options(Rest, http(max_connections, int(Opt, V, 1), O));
option(["--limit-request-fields", V | Rest], O) ->
    options(Rest, http(max_headers, int("--limit-request-fields", V, 1), O));
option([Opt, V | Rest], O) when Opt =:= "-t"; Opt =:= "--timeout" ->
    options(Rest, http(body_timeout, ms(Opt, V), O));
option(["--header-timeout", V | Rest], O) -> options(Rest, http(header_timeout, ms("--header-timeout", V), O));
option(["--keep-alive", V | Rest], O) -> options(Rest, http(idle_timeout, ms("--keep-alive", V), O));
option(["--graceful-timeout", V | Rest], O) ->
    options(Rest, http(graceful_timeout, ms("--graceful-timeout", V), O));
option(["--python-path", V | Rest], O) -> options(Rest, O#{python_path := [V | maps:get(python_path, O)]});
option(["--pythonpath", V | Rest], O) ->
    Dirs = [D || D <- string:split(V, ",", all), D =/= ""],
    options(Rest, O#{python_path := lists:reverse(Dirs) ++ maps:get(python_path, O)});
option(["--chdir", V | Rest], O) -> options(Rest, O#{chdir := V});
option([Opt, V | Rest], O) when Opt =:= "--access-log"; Opt =:= "--access-logfile" ->
    options(Rest, O#{access_log := V});
option(["--log-level", V | Rest], O) ->
    Level = case string:lowercase(V) of
                L when L =:= "debug"; L =:= "info"; L =:= "warning"; L =:= "error"; L =:= "critical" ->
                    list_to_atom(L);
                _ -> throw({usage, "--log-level: expected debug, info, warning, error or critical"})
            end,
    options(Rest, O#{log_level := Level});
option(["--forwarded-allow-ips", "*" | Rest], O) ->
    options(Rest, http(forwarded_allow_ips, all, O));
option(["--forwarded-allow-ips", V | Rest], O) ->
    Ips = [case inet:parse_strict_address(string:trim(A)) of
               {ok, Ip} -> Ip;
               {error, _} -> throw({usage, "--forwarded-allow-ips: not an IP address: " ++ A})
           end || A <- string:split(V, ",", all), string:trim(A) =/= ""],
    options(Rest, http(forwarded_allow_ips, Ips, O));
option(["--no-proxy-headers" | Rest], O) ->
    options(Rest, http(proxy_headers, false, O));
option(["--root-path", "/" ++ _ = V | Rest], O) ->
    options(Rest, http(root_path, unicode:characters_to_binary(string:trim(V, trailing, "/")), O));
option(["--root-path", V | _], _) ->
    throw({usage, "--root-path: expected a path starting with /, got " ++ V});
option(["--interface", V | Rest], O) ->
    case lists:member(V, ["auto", "wsgi", "asgi"]) of
        true -> options(Rest, http(interface, list_to_atom(V), O));
        false -> throw({usage, "--interface: expected auto, wsgi or asgi"})
    end;
option(["-" ++ _ = Opt | _], _) ->
    throw({usage, "unknown option " ++ Opt});
option([App | Rest], #{app := undefined} = O) ->
    options(Rest, O#{app := App});
option([Extra | _], _) ->
    throw({usage, "unexpected argument " ++ Extra}).

http(Key, Value, #{http := H} = O) ->
    O#{http := H#{Key => Value}}.

int(Opt, V, Min) ->
    case string:to_integer(V) of
        {N, ""} when N >= Min -> N;
        _ -> throw({usage, Opt ++ ": expected an integer >= " ++ integer_to_list(Min) ++ ", got " ++ V})
    end.

%% Seconds (gunicorn's unit, fractions allowed) to milliseconds.
ms(Opt, V) ->
    case {string:to_integer(V), string:to_float(V)} of
        {{N, ""}, _} when N >= 0 -> N * 1000;
        {_, {F, ""}} when F >= 0 -> round(F * 1000);
        _ -> throw({usage, Opt ++ ": expected seconds, got " ++ V})
    end.

%% MODULE[:CALLABLE], each a dotted Python name.
app_name(App) ->
    Name = "[A-Za-z_][A-Za-z0-9_]*(\\.[A-Za-z_][A-Za-z0-9_]*)*",
    case re:run(App, "^" ++ Name ++ "(:" ++ Name ++ ")?$", [{capture, none}, unicode]) of
        match -> ok;
        nomatch -> error
    end.

%% ------------------------------------------------------------------ serving

-spec serve(opts()) -> no_return().
serve(#{app := App0, binds := Binds, http := Http, contexts := Contexts} = Opts) ->
    App = case string:find(App0, ":") of nomatch -> App0 ++ ":application"; _ -> App0 end,
    Addrs = [address(B) || B <- Binds],
    logging(Opts),
    case maps:get(chdir, Opts) of
        undefined -> ok;
        Dir -> file:set_cwd(Dir) =:= ok orelse fail(?USAGE_ERROR, "cannot change to directory ~ts", [Dir])
    end,
    {ok, Cwd} = file:get_cwd(),
    maps:get(worker_nodes, Http, 0) > 0 andalso distribute(),
    ok = application:load(erlpy),
    ok = application:set_env(erlpy, contexts, Contexts),
    ok = application:set_env(erlpy, python_path,
                             [filename:absname(D) || D <- maps:get(python_path, Opts)] ++ [Cwd]),
    {ok, _} = application:ensure_all_started(erlpy),
    AppBin = unicode:characters_to_binary(App),
    case py:call(erlpy_wsgi, load_app, [AppBin]) of
        {ok, _} -> ok;
        {error, {python, Type, Msg, Tb}} ->
            fail(?APP_ERROR, "cannot load app ~ts: ~ts: ~ts~n~ts", [App, Type, Msg, Tb]);
        {error, Reason} ->
            fail(?APP_ERROR, "cannot load app ~ts: ~p", [App, Reason])
    end,
    Log = maps:get(access_log, Opts) =/= undefined,
    [listen(AppBin, Http#{access_log => Log}, Addr) || Addr <- Addrs],
    erlpy_cli_signals:install(),
    receive after infinity -> ok end.

listen(App, Http, {Host, Ip, Port}) ->
    case erlpy_http:start(Http#{app => App, ip => Ip, port => Port}) of
        {ok, Server} ->
            io:format(standard_error, "erlpy: listening at http://~ts:~b/~n",
                      [Host, erlpy_http:port(Server)]);
        {error, {lifespan_startup_failed, Msg}} ->
            fail(?APP_ERROR, "app startup failed: ~ts", [Msg]);
        {error, Reason} ->
            Why = if is_atom(Reason) -> inet:format_error(Reason);
                     true -> io_lib:format("~p", [Reason])
                  end,
            fail(?LISTEN_ERROR, "cannot listen on ~ts:~b: ~ts", [Host, Port, Why])
    end.

%% Worker nodes need a distributed node: a short name of our own (epmd
%% started if it is not running), unless `erl' was given one.
distribute() ->
    case node() of
        nonode@nohost ->
            _ = os:cmd("epmd -daemon"),
            Name = list_to_atom("erlpy_" ++ os:getpid()),
            case net_kernel:start([Name, shortnames]) of
                {ok, _} -> true;
                {error, Reason} -> fail(?LISTEN_ERROR, "--workers: cannot start distribution: ~p", [Reason])
            end;
        _ ->
            true
    end.

%% HOST:PORT, [IPV6]:PORT or HOST (port 8000, as gunicorn) ->
%% {HostAsWritten, Ip, Port}.
address(Bind) ->
    {Host, PortText} =
        case string:split(Bind, "]") of
            ["[" ++ V6, ""] -> {V6, "8000"};
            ["[" ++ V6, ":" ++ P] -> {V6, P};
            [_] ->
                case string:split(Bind, ":", trailing) of
                    [H, P] -> {H, P};
                    [H] -> {H, "8000"}
                end;
            _ -> bad_bind(Bind)
        end,
    Port = case string:to_integer(PortText) of
               {N, ""} when N >= 0, N =< 65535 -> N;
               _ -> bad_bind(Bind)
           end,
    Host =:= "" andalso bad_bind(Bind),
    case inet:parse_address(Host) of
        {ok, Ip} -> {shown(Ip, Host), Ip, Port};
        {error, _} ->
            case inet:getaddr(Host, inet) of
                {ok, Ip} -> {Host, Ip, Port};
                {error, _} -> fail(?LISTEN_ERROR, "cannot listen on ~ts: unknown host", [Bind])
            end
    end.

shown(Ip, Host) when tuple_size(Ip) =:= 8 -> "[" ++ Host ++ "]";
shown(_, Host) -> Host.

-spec bad_bind(string()) -> no_return().
bad_bind(Bind) ->
    fail(?USAGE_ERROR, "--bind ~ts: expected HOST:PORT, [IPV6]:PORT or HOST", [Bind]).

%% Logs go to stderr at the chosen level; access lines (the logger domain
%% [erlpy, access]) go to --access-log only.
logging(#{log_level := Level, access_log := Access}) ->
    Format = {logger_formatter, #{single_line => true, template => [time, " [", level, "] ", msg, "\n"]}},
    %% OTP's progress reports (supervisors and applications started) are
    %% not news on a command line.
    ok = logger:add_primary_filter(no_progress, {fun logger_filters:progress/2, stop}),
    ok = logger:remove_handler(default),
    ok = logger:add_handler(default, logger_std_h,
                            #{level => Level, config => #{type => standard_error}, formatter => Format,
                              filters => [{no_access, {fun logger_filters:domain/2,
                                                       {stop, sub, [erlpy, access]}}}]}),
    case Access of
        undefined ->
            ok = logger:set_primary_config(level, Level);
        _ ->
            ok = logger:set_primary_config(level, min_level(Level, info)),
            Config = case Access of
                         "-" -> #{type => standard_io};
                         File -> #{file => filename:absname(File)}
                     end,
            ok = logger:add_handler(erlpy_access, logger_std_h,
                                    #{level => info, config => Config,
                                      filter_default => stop,
                                      filters => [{access, {fun logger_filters:domain/2,
                                                            {log, sub, [erlpy, access]}}}],
                                      formatter => {logger_formatter, #{single_line => true,
                                                                        template => [msg, "\n"]}}})
    end.

min_level(A, B) ->
    case logger:compare_levels(A, B) of
        lt -> A;
        _ -> B
    end.

version() ->
    _ = application:load(erlpy),
    {ok, Vsn} = application:get_key(erlpy, vsn),
    Vsn.

-spec fail(1..255, string(), list()) -> no_return().
fail(Status, Format, Args) ->
    io:format(standard_error, "erlpy: " ++ Format ++ "~n", Args),
    halt(Status).
