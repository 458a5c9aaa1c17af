%% @doc Runs a Python WSGI (PEP 3333) application for one request.
%%
%% The caller supplies the CGI part of the environ, the request body as a
%% `py_buffer' (it may still be being written: the app reads it as it comes)
%% and a handler that puts the response on the wire: a fun and its initial
%% state.  `run/5' returns when the app has finished; meanwhile the calling
%% process receives the response as messages from the Python worker and
%% calls the handler with each event and the state:
%%
%% <ul>
%% <li>`{headers, Status, Headers}' once, before the first body byte (or at
%%     the end for an empty body);</li>
%% <li>`{body, Binary}' for each non-empty chunk, as it is produced;</li>
%% <li>`read_started' once, when the app first waits for body bytes that
%%     have not arrived, if the option `notify_read' is true (an HTTP server
%%     answers `Expect: 100-continue' then).</li>
%% </ul>
%%
%% The handler returns `{ok, State}', or `{error, Reason}' when the client is
%% gone: then the app's body is closed (or its next `write()' or body read
%% raises), and `run/5' returns `{{error, client_closed}, State}'.
%%
%% The response body is advanced in steps, each a job on the worker thread
%% that called the app: a step sends at most 256 KiB (the window), then
%% returns; once the handler has taken all of it, the next step is sent to
%% that same worker.  While the handler waits for a slow client, the worker
%% serves other calls, and at most the window is held in memory.  The app's
%% `close()' runs on that thread, once.  This is how erlpy's own HTTP server
%% (`erlpy_http') uses it; any Erlang HTTP server can do the same.
-module(py_wsgi).

-export([run/5, environ/1]).
-export([start_link/0, reaper_init/0]).

-define(IS_HEX(C), ((C >= $0 andalso C =< $9) orelse (C >= $a andalso C =< $f)
                    orelse (C >= $A andalso C =< $F))).

-type app() :: binary() | string() | reference().
-type status() :: binary().
-type headers() :: [{binary(), binary()}].
-type event() :: {headers, status(), headers()} | {body, binary()}.
-type handler_fun() :: fun((event() | read_started, term()) -> {ok, term()} | {error, term()}).
-type handler() :: {handler_fun(), State :: term()}.
-type result() :: ok
                | {error, client_closed}
                | {error, busy}
                | {error, {app_error, py:error()}, HeadersSent :: boolean()}.
-type options() :: #{context => py:target(), on_log => fun((binary()) -> any()),
                     notify_read => boolean(), gate => py:gate(),
                     would_block => fun(() -> boolean())}.
-export_type([app/0, handler/0, handler_fun/0, event/0, result/0, options/0]).

-define(REAPER, py_wsgi_reaper).
-define(ACKS, {?MODULE, acks}).

%% @doc Runs `App' ("module:callable", or a Python object handle) with the
%% given environ (a map of binary keys; values binaries or integers; the
%% input buffer is added as `wsgi.input'; `none' for a request without a
%% body: the app reads an empty `io.BytesIO', with no buffer made).  Options: `context' (default
%% `any': the first job goes to any free worker, later steps to the same
%% one), `on_log' (what `wsgi.errors' writes; default: `logger:warning'),
%% `notify_read' (default false), and `gate', a `py:gate/2' every job of
%% the request passes (the first may be refused: then the app is not run
%% and the result is `{error, busy}'; later steps wait).  `would_block' (default:
%% never) tells whether handing the next chunk to the handler may wait long
%% (the client is not reading): then the job's end is awaited first, so its
%% worker is released before that wait.  Returns the result and the
%% handler's final state.
-spec run(app(), map(), py_buffer:buffer() | none, handler(), options()) -> {result(), term()}.
run(App, Environ, Input, {Handler, HState}, Opts) when is_function(Handler, 2), is_map(Environ) ->
    AppTerm = if is_list(App) -> unicode:characters_to_binary(App); true -> App end,
    Rid = erlang:unique_integer([positive]),
    Acks = acks(),
    Reaper = case whereis(?REAPER) of undefined -> none; Pid -> Pid end,
    Args = [AppTerm, Environ#{<<"wsgi.input">> => Input}, self(), Rid, Acks, Reaper],
    case maps:get(notify_read, Opts, false) of
        true when Input =/= none -> ok = py_nif:buffer_notify_read(Input, Rid);
        _ -> ok
    end,
    Log = maps:get(on_log, Opts, fun(Text) -> logger:warning("wsgi.errors: ~ts", [Text]) end),
    S = #{rid => Rid, acks => Acks, input => Input, handler => Handler, hstate => HState,
          log => Log, sent => false, gone => false, gate => maps:with([gate], Opts),
          would_block => maps:get(would_block, Opts, fun() -> false end),
          blocking => false, acked_after => none, delivered => 0, reply => none},
    job(S, maps:get(context, Opts, any), run, Args, first);
run(_App, _Environ, _Input, _Handler, _Opts) ->
    error(badarg).

%% The acknowledgement stream, kept by the calling process from one request
%% to the next (a connection's keep-alive requests): only an app that calls
%% write() is sent acknowledgements, and after such a request (or one whose
%% client left) the stream is dropped, so no stale acknowledgement reaches
%% a later request.
acks() ->
    case erase(?ACKS) of
        undefined ->
            {ok, Acks} = py_buffer:new(),
            Acks;
        Acks ->
            Acks
    end.

reuse_acks(#{blocking := false, gone := false, acks := Acks}) ->
    put(?ACKS, Acks);
reuse_acks(_S) ->
    ok.

%% One job of the request (through the gate, if any), then the messages it
%% sends.
job(#{gate := Gate} = S, Ctx, Function, Args, Admit) ->
    case py:submit(Ctx, erlpy_wsgi, Function, Args, #{}, Gate#{admit => Admit}) of
        {ok, Ref} ->
            loop(S#{ref => Ref});
        {error, busy} -> %% only ever a first job: the app did not run
            reuse_acks(S),
            {{error, busy}, maps:get(hstate, S)};
        {error, Reason} ->
            {{error, {app_error, Reason}, maps:get(sent, S)}, maps:get(hstate, S)}
    end.

%% @doc The CGI variables of a request, as binaries, from its parts:
%% `method', `path' (the raw request target), `version' ({Major, Minor}),
%% `headers' ([{Name, Value}] as received), `server_name', `server_port',
%% `remote_addr', `remote_port', `scheme', `script_name' (where the app is
%% mounted, default empty: `SCRIPT_NAME', and taken off the front of
%% `PATH_INFO' when the path starts with it, as gunicorn does).
-spec environ(map()) -> map().
environ(#{method := Method, path := Target, version := {Major, Minor}, headers := Headers} = R) ->
    {Path, Query} = case binary:split(Target, <<"?">>) of
                        [P, Q] -> {P, Q};
                        [P] -> {P, <<>>}
                    end,
    Script = maps:get(script_name, R, <<>>),
    PathInfo = under(Script, percent_decode(Path)),
    Base = #{<<"REQUEST_METHOD">> => Method,
             <<"SCRIPT_NAME">> => Script,
             <<"PATH_INFO">> => PathInfo,
             <<"QUERY_STRING">> => Query,
             <<"RAW_URI">> => Target,
             <<"SERVER_NAME">> => maps:get(server_name, R, <<"localhost">>),
             <<"SERVER_PORT">> => integer_to_binary(maps:get(server_port, R, 80)),
             <<"SERVER_PROTOCOL">> => <<"HTTP/", (integer_to_binary(Major))/binary, ".",
                                    (integer_to_binary(Minor))/binary>>,
             <<"REMOTE_ADDR">> => maps:get(remote_addr, R, <<>>),
             <<"REMOTE_PORT">> => integer_to_binary(maps:get(remote_port, R, 0)),
             <<"wsgi.url_scheme">> => maps:get(scheme, R, <<"http">>)},
    lists:foldl(fun add_header/2, Base, Headers).

%% ------------------------------------------------------------------ internal

%% The path below the mount point, when it is below it.
under(<<>>, Path) ->
    Path;
under(Script, Path) ->
    N = byte_size(Script),
    case Path of
        <<Script:N/binary>> -> <<>>;
        <<Script:N/binary, $/, _/binary>> -> binary_part(Path, N, byte_size(Path) - N);
        _ -> Path
    end.

add_header({Name, Value}, Env) ->
    Key = case upper(Name) of
              <<"CONTENT-TYPE">> -> <<"CONTENT_TYPE">>;
              <<"CONTENT-LENGTH">> -> <<"CONTENT_LENGTH">>;
              Upper -> <<"HTTP_", << <<(if C =:= $- -> $_; true -> C end)>> || <<C>> <= Upper >>/binary>>
          end,
    case Env of
        %% Repeated headers join with a comma (RFC 9110 5.3).
        #{Key := Old} when Key =/= <<"CONTENT_TYPE">>, Key =/= <<"CONTENT_LENGTH">> ->
            Env#{Key => <<Old/binary, ",", Value/binary>>};
        _ ->
            Env#{Key => Value}
    end.

%% Header names are ASCII tokens.
upper(B) ->
    << <<(if C >= $a, C =< $z -> C - 32; true -> C end)>> || <<C>> <= B >>.

percent_decode(Bin) ->
    percent_decode(Bin, <<>>).

percent_decode(<<$%, H, L, Rest/binary>>, Acc) when ?IS_HEX(H), ?IS_HEX(L) ->
    percent_decode(Rest, <<Acc/binary, (list_to_integer([H, L], 16))>>);
percent_decode(<<C, Rest/binary>>, Acc) ->
    percent_decode(Rest, <<Acc/binary, C>>);
percent_decode(<<>>, Acc) ->
    Acc.

%% The messages of the running job, then its reply.  A reply taken early
%% (see hold/1) is acted on once the job's messages before it are handled.
loop(#{ref := Ref, rid := Rid, reply := Early} = S) ->
    receive
        {wsgi_headers, Rid, Status, Headers, <<>>} ->
            loop(deliver(S#{sent := true}, {headers, Status, Headers}));
        {wsgi_headers, Rid, Status, Headers, First} ->
            loop(body(deliver(S#{sent := true}, {headers, Status, Headers}), First));
        {wsgi_body, Rid, Chunk} ->
            loop(body(S, Chunk));
        {wsgi_blocking, Rid, Before} ->
            loop(S#{blocking := true, acked_after := Before});
        {wsgi_log, Rid, Text} ->
            (maps:get(log, S))(Text),
            loop(S);
        {py_buffer_reading, Rid} ->
            loop(deliver(S, read_started));
        {Ref, Reply} when Early =:= none ->
            next(S#{reply := {reply, Reply}}, Reply)
    after case Early of none -> infinity; _ -> 0 end ->
            {reply, Reply} = Early,
            next(S, Reply)
    end.

%% Once the app has called write() (which counts what is in flight; the
%% body iterable's chunks are paced by the steps), each chunk it sent after
%% that call is acknowledged once delivered: wsgi_blocking says how many
%% chunks came before it.  Before a delivery that may wait long for the
%% client, the job's reply is awaited (the job sends no more than the
%% window, without waiting), so its worker is given back first.
body(S, Chunk) ->
    #{delivered := N} = S2 = deliver(hold(S), {body, Chunk}),
    _ = case S2 of
            #{acked_after := Before, acks := Acks} when is_integer(Before), N >= Before ->
                py_buffer:write(Acks, <<1>>);
            _ ->
                ok
        end,
    S2#{delivered := N + 1}.

hold(#{reply := none, blocking := false, gone := false, would_block := WouldBlock} = S) ->
    case WouldBlock() of
        true -> await_reply(S);
        false -> S
    end;
hold(S) ->
    S.

%% Unless the app turns to write(), which waits for deliveries.
await_reply(#{ref := Ref, rid := Rid} = S) ->
    receive
        {Ref, Reply} -> S#{reply := {reply, Reply}};
        {wsgi_blocking, Rid, Before} -> S#{blocking := true, acked_after := Before};
        {py_buffer_reading, Rid} -> await_reply(deliver(S, read_started))
    end.

%% Every chunk of the window has been handed to the handler: the next
%% step, on the worker that ran the last one, or close when the client left.
next(S, {ok, {more, Token, Ctx}}) ->
    Function = case S of #{gone := true} -> close; _ -> step end,
    job(S#{reply := none}, py:context(Ctx), Function, [Token], next);
next(S, {ok, {done, Status, Headers, Body}}) ->
    %% The whole response came in the reply (the worker is free already).
    S2 = deliver(S#{sent := true}, {headers, Status, Headers}),
    S3 = case Body of
             <<>> -> S2;
             _ -> deliver(S2, {body, Body})
         end,
    {finish(S3, {ok, ok}), maps:get(hstate, S3)};
next(S, Reply) ->
    {finish(S, Reply), maps:get(hstate, S)}.

finish(S, Reply) ->
    case finish_result(S, Reply) of
        ok -> reuse_acks(S), ok;
        Error -> Error
    end.

%% Once the client is gone, nothing more is delivered; the app is told by
%% aborting its input and the acknowledgement stream.
deliver(#{gone := true} = S, _Event) ->
    S;
deliver(#{handler := Handler, hstate := HState} = S, Event) ->
    case Handler(Event, HState) of
        {ok, HState2} ->
            S#{hstate := HState2};
        {error, _} ->
            ok = py_buffer:abort(maps:get(acks, S), client_closed),
            case maps:get(input, S) of
                none -> ok;
                Input -> ok = py_buffer:abort(Input, client_closed)
            end,
            S#{gone := true}
    end.

finish_result(#{gone := true}, _Reply) ->
    {error, client_closed};
finish_result(_S, {ok, ok}) ->
    ok;
finish_result(#{sent := Sent}, {ok, Other}) ->
    {error, {app_error, {unexpected_result, Other}}, Sent};
finish_result(#{sent := Sent}, {error, Reason}) ->
    {error, {app_error, Reason}, Sent}.

%% ------------------------------------------------------------------ reaper

%% @private
%% @doc The reaper, started by erlpy_sup: a response whose Erlang process
%% died between two steps (killed outright) is closed on its own thread.
-spec start_link() -> {ok, pid()}.
start_link() ->
    proc_lib:start_link(?MODULE, reaper_init, []).

%% @private
-spec reaper_init() -> no_return().
reaper_init() ->
    true = register(?REAPER, self()),
    proc_lib:init_ack({ok, self()}),
    reap().

reap() ->
    receive
        {erlpy_wsgi_orphan, Ctx, Key} ->
            _ = py:submit(py:context(Ctx), erlpy_wsgi, close_orphan, [Key], #{}),
            reap();
        {Ref, {error, Reason}} when is_reference(Ref) ->
            logger:warning("WSGI response close() failed: ~p", [Reason]),
            reap();
        _ ->
            reap()
    end.
