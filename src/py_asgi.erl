%% @doc Runs Python ASGI 3.0 applications (HTTP spec 2.3, lifespan).
%%
%% Each ASGI context runs one asyncio event loop (uvloop when it imports)
%% in its worker thread, for as long as the application runs; requests are
%% tasks on those loops, spread round-robin.  A loop job never returns, so
%% work reaches it through an inbox (`c_src/asgi_inbox.c'): a push copies the
%% term and writes the eventfd the loop watches, on the caller's scheduler,
%% without the GIL.  The loops start with the first use (`loops/0'); their
%% number is the app env `asgi_loops' (default: all contexts but one, left
%% to `py:call' and WSGI), on the last contexts; they stop with the last
%% server's `shutdown/1'.
%%
%% A request: `submit/6' hands the loop the scope, the body (a `py_buffer',
%% which may still be being written) and the caller's pid.  The app's
%% `receive()' reads the buffer; its `send()' comes back to the caller as
%% messages (`Rid' is the caller's integer):
%%
%% <ul>
%% <li>`{asgi_response, Rid, Status, Headers, Body, MoreBody, Blocked}': the
%%     status line (`<<"200 OK">>'), `[{Name, Value}]' and the first body
%%     chunk;</li>
%% <li>`{asgi_body, Rid, Body, MoreBody, Blocked}' for each later chunk;</li>
%% <li>`{asgi_done, Rid, Result}' when the app returned (`ok') or raised
%%     (`{python, Type, Message, Traceback}') before the response was
%%     complete (`cancelled' or `{error, stopped}' when it was cut short).
%%     Nothing follows a chunk with `MoreBody' false: the task may run on
%%     (background tasks), detached.</li>
%% </ul>
%%
%% Flow control: when `Blocked' is true, the app's `send()' waits until the
%% caller, having written everything received so far, calls `credit/1'
%% (at most 256 KiB are in flight).  `disconnect/1' tells the app the client
%% left (`receive()' returns `http.disconnect', sends are dropped);
%% `cancel/1' cancels the task; the caller's death cancels its tasks.
%% `erlpy_http' does all this; see docs/asgi.md.
-module(py_asgi).
-behaviour(gen_server).

-export([submit/6, credit/1, disconnect/1, cancel/1,
         interface/1, startup/1, shutdown/1, loops/0]).
-export([start_link/0, init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-include_lib("kernel/include/logger.hrl").

-define(LOOPS, {?MODULE, loops}).

-record(request, {inbox :: py_nif:inbox(), rid :: integer()}).
-opaque request() :: #request{}.
-type scope() :: #{method := binary(), path := binary(), version := {non_neg_integer(), non_neg_integer()},
                   headers := [{binary(), binary()}], client => {binary(), inet:port_number()},
                   server => {binary(), inet:port_number()}, scheme => binary(),
                   root_path => binary()}.
-type server_id() :: integer() | none.
-export_type([request/0, scope/0, server_id/0]).

%% @doc Starts `App' ("module:callable" or a Python object handle) for one
%% HTTP request on a loop.  `Scope': `method', `path' (the request target as
%% received, query included), `version', `headers' (names lower-case, in
%% order), `client' and `server' ({Host, Port}), `scheme' (default
%% `<<"http">>'), `root_path' (default empty).  `Input' is the body, or `none' for a request without
%% one.  `Server' is what `startup/1' returned (its lifespan state
%% is the scope's `state'), or `none'.  With `#{notify_read => true}' the
%% caller gets `{py_buffer_reading, Rid}' when the app first waits for body
%% bytes (time for `100 Continue').  `{error, closed}' if the loop is gone.
-spec submit(integer(), py_wsgi:app(), server_id(), scope(), py_buffer:buffer() | none, map()) ->
          {ok, request()} | {error, closed}.
submit(Rid, App, Server, #{method := Method, path := Target, version := {Major, Minor},
                           headers := Headers} = Scope, Input, Opts) when is_integer(Rid) ->
    Inbox = pick(),
    {RawPath, Query} = case binary:split(Target, <<"?">>) of
                           [P, Q] -> {P, Q};
                           [P] -> {P, <<>>}
                       end,
    Version = case {Major, Minor} of
                  {1, 1} -> <<"1.1">>;
                  {1, 0} -> <<"1.0">>;
                  _ -> <<(integer_to_binary(Major))/binary, ".", (integer_to_binary(Minor))/binary>>
              end,
    Parts = {Method, RawPath, Query, Version, Headers, maps:get(client, Scope, {<<>>, 0}),
             maps:get(server, Scope, {<<"localhost">>, 80}), maps:get(scheme, Scope, <<"http">>),
             maps:get(root_path, Scope, <<>>)},
    _ = Input =/= none andalso maps:get(notify_read, Opts, false) andalso py_nif:buffer_notify_read(Input, Rid),
    %% The loop hears of this process's death: once per process and loop.
    Monitor = get({?MODULE, Inbox}) =:= undefined,
    case py_nif:inbox_push(Inbox, {request, Rid, self(), App, Server, Parts, Input}, Monitor) of
        ok ->
            Monitor andalso put({?MODULE, Inbox}, true),
            {ok, #request{inbox = Inbox, rid = Rid}};
        {error, closed} = Error ->
            Error
    end.

%% @doc Everything the app sent so far has been written: a `send()'
%% waiting for room resumes.
-spec credit(request()) -> ok.
credit(#request{inbox = Inbox, rid = Rid}) ->
    push(Inbox, {credit, Rid}).

%% @doc The client is gone: `receive()' returns `http.disconnect' and the
%% app's sends are dropped.
-spec disconnect(request()) -> ok.
disconnect(#request{inbox = Inbox, rid = Rid}) ->
    push(Inbox, {disconnect, Rid}).

%% @doc Cancels the request's task (nothing more is sent about it).
-spec cancel(request()) -> ok.
cancel(#request{inbox = Inbox, rid = Rid}) ->
    push(Inbox, {cancel, Rid}).

push(Inbox, Term) ->
    _ = py_nif:inbox_push(Inbox, Term, false),
    ok.

%% @doc `asgi' or `wsgi': how `App' wants to be called, by uvicorn's rule
%% (a coroutine function, or an object whose `__call__' is one, is ASGI).
-spec interface(py_wsgi:app()) -> {ok, asgi | wsgi} | {error, py:error()}.
interface(App) ->
    case py:call(erlpy_asgi, interface, [App]) of
        {ok, <<"asgi">>} -> {ok, asgi};
        {ok, <<"wsgi">>} -> {ok, wsgi};
        {error, _} = Error -> Error
    end.

%% @doc Runs the lifespan protocol's startup for `App' on every loop and
%% returns the server id that `submit/6' and `shutdown/1' take.  An app
%% that raises before answering does not do lifespan (as uvicorn's `auto'):
%% it is served anyway.  `{error, {lifespan_startup_failed, Message}}' when
%% the app sent `lifespan.startup.failed' (the loops where it succeeded are
%% shut down again).
-spec startup(py_wsgi:app()) -> {ok, integer()} | {error, {lifespan_startup_failed, binary()}}.
startup(App) ->
    Sid = erlang:unique_integer([positive]),
    ok = gen_server:call(?MODULE, {register, Sid}, infinity),
    Results = lifespan(startup, Sid, App),
    case [Msg || {error, Msg} <- Results] of
        [] ->
            {ok, Sid};
        [Msg | _] ->
            ok = shutdown(Sid),
            {error, {lifespan_startup_failed, Msg}}
    end.

%% @doc Runs the lifespan shutdown of a server on every loop (failures are
%% logged).  After the last server's, the loops stop: their contexts take
%% jobs again.
-spec shutdown(integer()) -> ok.
shutdown(Sid) ->
    lists:foreach(fun({error, Msg}) -> ?LOG_WARNING("ASGI lifespan shutdown failed: ~ts", [Msg]);
                     (_) -> ok
                  end, lifespan(shutdown, Sid, none)),
    try
        gen_server:call(?MODULE, {unregister, Sid}, infinity)
    catch
        exit:{noproc, _} -> ok
    end.

lifespan(Phase, Sid, App) ->
    case whereis(?MODULE) of
        undefined -> []; %% erlpy is stopping, or stopped: no loops left
        Owner -> lifespan(Phase, Sid, App, Owner)
    end.

lifespan(Phase, Sid, App, Owner) ->
    %% A shutdown finds the loops running, or has nothing to do.
    {Inboxes, _} = case Phase of
                       startup -> loops_term();
                       shutdown -> persistent_term:get(?LOOPS, {{}, none})
                   end,
    Ref = make_ref(),
    Sent = [ok || Inbox <- tuple_to_list(Inboxes),
                  py_nif:inbox_push(Inbox, {lifespan, Phase, Sid, App, self(), Ref}, false) =:= ok],
    Mon = erlang:monitor(process, Owner),
    try
        [receive
             {Ref, _Ctx, Result} -> Result;
             {'DOWN', Mon, _, _, _} -> {error, <<"the ASGI loops stopped">>}
         end || _ <- Sent]
    after
        erlang:demonitor(Mon, [flush])
    end.

%% @doc The number of event loops, started if they were not.
-spec loops() -> pos_integer().
loops() ->
    {Inboxes, _} = loops_term(),
    tuple_size(Inboxes).

loops_term() ->
    case persistent_term:get(?LOOPS, undefined) of
        undefined -> gen_server:call(?MODULE, start_loops, infinity);
        Loops -> Loops
    end.

pick() ->
    {Inboxes, Counter} = loops_term(),
    element(atomics:add_get(Counter, 1, 1) rem tuple_size(Inboxes) + 1, Inboxes).

%% ------------------------------------------------------------------ the owner

%% @private
%% @doc The process that owns the loop jobs (their caller: its death
%% cancels them), started by erlpy_sup.  It logs what the loops report and
%% restarts a loop that ends.
-spec start_link() -> {ok, pid()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @private
-spec init([]) -> {ok, map()}.
init([]) ->
    process_flag(trap_exit, true),
    {ok, #{jobs => #{}, servers => #{}}}.

%% @private
-spec handle_call(start_loops | {register | unregister, integer()}, gen_server:from(), map()) ->
          {reply, term(), map()}.
handle_call(start_loops, _From, S) ->
    S2 = start_loops(S),
    {reply, persistent_term:get(?LOOPS), S2};
handle_call({register, Sid}, _From, #{servers := Servers} = S) ->
    {reply, ok, (start_loops(S))#{servers := Servers#{Sid => true}}};
handle_call({unregister, Sid}, _From, #{servers := Servers} = S) ->
    case maps:remove(Sid, Servers) of
        Left when map_size(Left) =:= 0, map_size(Servers) > 0 ->
            {reply, ok, stop_loops(S#{servers := Left})};
        Left ->
            {reply, ok, S#{servers := Left}}
    end.

start_loops(#{jobs := Jobs} = S) when map_size(Jobs) > 0 ->
    S;
start_loops(S) ->
    %% On the last contexts: py:context(1) stays free for py:call.
    Contexts = py:contexts(),
    N = max(1, min(Contexts, application:get_env(erlpy, asgi_loops, max(1, Contexts - 1)))),
    Jobs = maps:from_list([start_loop(Ctx) || Ctx <- lists:seq(Contexts - N + 1, Contexts)]),
    publish(Jobs),
    S#{jobs := Jobs}.

%% Each loop cancels its tasks and returns; its context takes jobs again.
stop_loops(#{jobs := Jobs} = S) ->
    persistent_term:erase(?LOOPS),
    _ = [py_nif:inbox_push(Inbox, {stop}, false) || {_, Inbox} <- maps:values(Jobs)],
    Deadline = erlang:monotonic_time(millisecond) + 10000,
    lists:foreach(fun(Ref) ->
                          Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
                          receive {Ref, _} -> ok after Left -> ok end
                  end, maps:keys(Jobs)),
    S#{jobs := #{}}.

%% A loop on context Ctx: {JobRef, {Ctx, Inbox}}.
start_loop(Ctx) ->
    {ok, Inbox} = py_nif:inbox_new(),
    {ok, Ref} = py:submit(py:context(Ctx), erlpy_asgi, serve, [Inbox, self()], #{}),
    {Ref, {Ctx, Inbox}}.

publish(Jobs) ->
    Inboxes = list_to_tuple([Inbox || {_, Inbox} <- lists:sort(maps:values(Jobs))]),
    persistent_term:put(?LOOPS, {Inboxes, atomics:new(1, [])}).

%% @private
-spec handle_cast(term(), map()) -> {noreply, map()}.
handle_cast(_Msg, S) ->
    {noreply, S}.

%% @private
-spec handle_info(term(), map()) -> {noreply, map()}.
handle_info({asgi_log, Text}, S) ->
    ?LOG_ERROR("~ts", [Text]),
    {noreply, S};
handle_info({Ref, Reply}, #{jobs := Jobs} = S) when is_map_key(Ref, Jobs) ->
    %% A loop ended without being asked to: a new one takes its context.
    {{Ctx, _}, Jobs2} = maps:take(Ref, Jobs),
    ?LOG_ERROR("ASGI event loop on context ~b ended: ~p; restarting it", [Ctx, Reply]),
    {NewRef, Loop} = start_loop(Ctx),
    Jobs3 = Jobs2#{NewRef => Loop},
    publish(Jobs3),
    {noreply, S#{jobs := Jobs3}};
handle_info(_Msg, S) ->
    {noreply, S}.

%% @private
-spec terminate(term(), map()) -> ok.
terminate(_Reason, S) ->
    _ = stop_loops(S),
    ok.
