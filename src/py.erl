%% @doc Call Python from Erlang.
%%
%% Every call runs on one of erlpy's Python worker threads; the calling
%% process waits in a `receive', so no scheduler is blocked.  A context
%% (`context/1') is one worker thread with its own namespace: calls sent to
%% it run in order on the same OS thread.  Calls without a context go to any
%% free worker and share one namespace.
%%
%% Results are `{ok, Term}' (or `ok' for `exec'); errors are `{error, Reason}'
%% where Reason is an atom for runtime conditions (`timeout', `too_deep',
%% `not_started', `no_context', `enomem') or, for a Python exception,
%% `{python, Type, Message, Traceback}' with three binaries.
%% See docs/bridge.md for the conversion table.
-module(py).

-export([call/3, call/4, call/5, call/6,
         eval/1, eval/2, eval/3, eval/4,
         exec/1, exec/2, exec/3,
         submit/5, submit/6, gate/2, gate_info/1,
         context/1, contexts/0, worker_node/1, worker_node/2]).
-export([run/3]).

%% node: local, or a worker node of a pool (py_nodes) by index.
-record(py_context, {id :: non_neg_integer(),
                     node = local :: local | {atom(), pos_integer()}}).

-opaque context() :: #py_context{}.
-type target() :: context() | any | worker_nodes.
-type name() :: atom() | binary() | string().
-type code() :: iodata().
-type kwargs() :: #{atom() | binary() => term()}.
-type options() :: #{timeout => timeout()}.
-opaque gate() :: py_nif:gate().
-type submit_options() :: #{gate => gate(), admit => first | next}.
-type error() :: timeout | too_deep | not_started | no_context | enomem
               | no_worker_nodes | {node_down, node()} | {worker_exit, term()}
               | {foreign_handle, node()}
               | {python, Type :: binary(), Message :: binary(), Traceback :: binary()}.
-export_type([context/0, target/0, error/0, options/0, kwargs/0, gate/0, submit_options/0]).

%% @doc Calls `Module.Function(*Args)' on any free worker.
-spec call(name(), name(), [term()]) -> {ok, term()} | {error, error()}.
call(Module, Function, Args) ->
    call(any, Module, Function, Args, #{}, #{}).

%% @doc `call(Module, Function, Args, Kwargs)', or `call(Context, Module,
%% Function, Args)' when the first argument is a context.
-spec call(target() | name(), name(), [term()] | name(), kwargs() | [term()]) ->
          {ok, term()} | {error, error()}.
call(Ctx, Module, Function, Args) when is_record(Ctx, py_context); Ctx =:= any; Ctx =:= worker_nodes ->
    call(Ctx, Module, Function, Args, #{}, #{});
call(Module, Function, Args, Kwargs) ->
    call(any, Module, Function, Args, Kwargs, #{}).

%% @doc `call(Context, Module, Function, Args, Kwargs)', or `call(Module,
%% Function, Args, Kwargs, Options)' when the first argument is not a context.
-spec call(target() | name(), name(), name() | [term()], [term()] | kwargs(),
           kwargs() | options()) -> {ok, term()} | {error, error()}.
call(Ctx, Module, Function, Args, Kwargs) when is_record(Ctx, py_context); Ctx =:= any; Ctx =:= worker_nodes ->
    call(Ctx, Module, Function, Args, Kwargs, #{});
call(Module, Function, Args, Kwargs, Options) ->
    call(any, Module, Function, Args, Kwargs, Options).

%% @doc Calls `Module.Function(*Args, **Kwargs)' on `Context' (or `any'
%% worker).  Module and Function may be dotted (`os.path', `path.join').
%% Options: `timeout' in milliseconds (default: app env `call_timeout').
%% On timeout the Python code is interrupted by `erlang.CallTimeout'.
-spec call(target(), name(), name(), [term()], kwargs(), options()) ->
          {ok, term()} | {error, error()}.
call(Ctx, Module, Function, Args, Kwargs, Options)
  when is_list(Args), is_map(Kwargs), is_map(Options) ->
    %% length/1 rejects an improper list: positional arguments are a list.
    _ = length(Args),
    run(Ctx, {call, name(Module), name(Function), Args, Kwargs}, Options);
call(_Ctx, _Module, _Function, _Args, _Kwargs, _Options) ->
    error(badarg).

%% @doc Starts `Module.Function(*Args, **Kwargs)' on `Context' (or `any'
%% worker) without waiting for it: returns `{ok, Ref}' at once, and the
%% result, what `call/6' would have returned, arrives later as the message
%% `{Ref, Result}'.  For a process that has other messages to serve while
%% Python runs (a runner relaying a response).  There is no timeout: the
%% call runs to its end, unless the calling process dies first (then it is
%% cancelled, as every call whose caller dies).
-spec submit(target(), name(), name(), [term()], kwargs()) ->
          {ok, reference()} | {error, error()}.
submit(Ctx, Module, Function, Args, Kwargs) ->
    submit(Ctx, Module, Function, Args, Kwargs, #{}).

%% @doc `submit/5' with options: `gate', a gate (`gate/2') the call must
%% pass, on this node's workers, and `admit' (default `first'): a `first'
%% call is refused with `{error, busy}' when the gate's waiting room is
%% full, a `next' call (a later job of work already admitted) always waits.
-spec submit(target(), name(), name(), [term()], kwargs(), submit_options()) ->
          {ok, reference()} | {error, error() | busy}.
submit(Ctx, Module, Function, Args, Kwargs, Opts) when is_list(Args), is_map(Kwargs), is_map(Opts) ->
    _ = length(Args),
    Request = {call, name(Module), name(Function), Args, Kwargs},
    case {Ctx, Opts} of
        {#py_context{node = {_, _}}, #{gate := _}} ->
            error(badarg); %% gates are this node's
        {#py_context{node = {Pool, I}, id = N}, _} ->
            py_nodes:submit({Pool, I, N}, Request);
        {worker_nodes, #{gate := _}} ->
            error(badarg);
        {worker_nodes, _} ->
            py_nodes:submit(worker_nodes, Request);
        _ ->
            Ref = make_ref(),
            Submitted = case Opts of
                            #{gate := Gate} ->
                                py_nif:submit(context_id(Ctx), Ref, Request, Gate, maps:get(admit, Opts, first));
                            _ ->
                                py_nif:submit(context_id(Ctx), Ref, Request)
                        end,
            case Submitted of
                {ok, _Job} -> {ok, Ref};
                {error, _} = Error -> Error
            end
    end;
submit(_Ctx, _Module, _Function, _Args, _Kwargs, _Opts) ->
    error(badarg).

%% @doc A gate for calls on this node's workers: at most `MaxRunning' of the
%% calls submitted through it (`submit/6') are queued to run or running at
%% once, and at most `MaxWaiting' new ones wait beyond that, oldest first.
%% The wait happens in the worker pool, not in the caller: a worker that
%% finishes such a call starts the next waiting one itself.  erlpy's HTTP
%% server caps its share of the workers with one (`max_workers').  The
%% gate lives as long as a process or a call holds it.
-spec gate(pos_integer(), non_neg_integer()) -> gate() | {error, enomem}.
gate(MaxRunning, MaxWaiting) ->
    py_nif:gate_new(MaxRunning, MaxWaiting).

%% @doc The calls holding a place at a gate (queued to run or running) and
%% those waiting for one.
-spec gate_info(gate()) -> #{holding := non_neg_integer(), waiting := non_neg_integer()}.
gate_info(Gate) ->
    py_nif:gate_info(Gate).

%% @doc Evaluates a Python expression on any worker.
-spec eval(code()) -> {ok, term()} | {error, error()}.
eval(Code) ->
    eval(any, Code, #{}, #{}).

%% @doc Evaluates a Python expression with extra local names.
-spec eval(code(), kwargs()) -> {ok, term()} | {error, error()}.
eval(Code, Locals) ->
    eval(any, Code, Locals, #{}).

%% @doc Evaluates a Python expression on `Context' with extra local names.
-spec eval(target(), code(), kwargs()) -> {ok, term()} | {error, error()}.
eval(Ctx, Code, Locals) ->
    eval(Ctx, Code, Locals, #{}).

%% @doc Evaluates a Python expression on `Context' with extra local names
%% and options.  The expression sees the context's namespace.
-spec eval(target(), code(), kwargs(), options()) -> {ok, term()} | {error, error()}.
eval(Ctx, Code, Locals, Options) when is_map(Locals), is_map(Options) ->
    run(Ctx, {eval, code(Code), Locals}, Options);
eval(_Ctx, _Code, _Locals, _Options) ->
    error(badarg).

%% @doc Executes Python statements on any worker, in the shared namespace.
-spec exec(code()) -> ok | {error, error()}.
exec(Code) ->
    exec(any, Code, #{}).

%% @doc Executes Python statements on `Context'; names they define stay in
%% the context's namespace for later calls on it.
-spec exec(target(), code()) -> ok | {error, error()}.
exec(Ctx, Code) ->
    exec(Ctx, Code, #{}).

%% @doc Like `exec/2', with options.
-spec exec(target(), code(), options()) -> ok | {error, error()}.
exec(Ctx, Code, Options) when is_map(Options) ->
    run(Ctx, {exec, code(Code)}, Options);
exec(_Ctx, _Code, _Options) ->
    error(badarg).

%% @doc Context `N' (1-based, up to `contexts()').
-spec context(pos_integer()) -> context().
context(N) when is_integer(N), N >= 1 ->
    #py_context{id = N};
context(_) ->
    error(badarg).

%% @doc Any worker of the `I'-th worker node (1-based; app env
%% `worker_nodes', or added with `py_nodes:add/1').  See docs/nodes.md.
-spec worker_node(pos_integer()) -> context().
worker_node(I) ->
    worker_node(I, 0).

%% @doc Context `N' of the `I'-th worker node (`0': any of its workers).
-spec worker_node(pos_integer(), non_neg_integer()) -> context().
worker_node(I, N) when is_integer(I), I >= 1, is_integer(N), N >= 0 ->
    #py_context{id = N, node = {py_nodes, I}};
worker_node(_, _) ->
    error(badarg).

%% @doc The number of contexts the running application has.
-spec contexts() -> non_neg_integer().
contexts() ->
    maps:get(contexts, py_nif:info()).

%% ------------------------------------------------------------------ internal

%% @private
%% @doc Runs a request on a target; py_nodes runs it with this on a worker node.
-spec run(target(), tuple(), options()) -> term().
run(Ctx, Request, Options) ->
    Timeout = maps:get(timeout, Options, application:get_env(erlpy, call_timeout, infinity)),
    is_timeout(Timeout) orelse error(badarg),
    case Ctx of
        #py_context{node = {Pool, I}, id = N} -> py_nodes:call({Pool, I, N}, Request, Timeout, Options);
        worker_nodes -> py_nodes:call(worker_nodes, Request, Timeout, Options);
        _ ->
            case py_nodes:foreign_handle(Request) of
                false -> run_local(Ctx, Request, Timeout);
                Node -> {error, {foreign_handle, Node}}
            end
    end.

run_local(Ctx, Request, Timeout) ->
    Ref = make_ref(),
    case py_nif:submit(context_id(Ctx), Ref, Request) of
        {ok, Job} -> await(Ref, Job, Timeout);
        {error, _} = Error -> Error
    end.

%% The worker replies {Ref, Reply}.  After a timeout, cancel: if the reply
%% was already on its way, take it; otherwise the worker will not send one.
await(Ref, Job, Timeout) ->
    receive
        {Ref, Reply} -> Reply
    after Timeout ->
            case py_nif:cancel(Job) of
                cancelled -> {error, timeout};
                done -> receive {Ref, Reply} -> Reply end
            end
    end.

context_id(any) -> 0;
context_id(#py_context{id = N, node = local}) -> N;
context_id(_) -> error(badarg).

is_timeout(infinity) -> true;
is_timeout(T) -> is_integer(T) andalso T >= 0 andalso T =< 16#ffffffff.

name(Name) when is_atom(Name) -> atom_to_binary(Name, utf8);
name(Name) when is_binary(Name) -> Name;
name(Name) when is_list(Name) -> code(Name);
name(_) -> error(badarg).

code(Code) ->
    try unicode:characters_to_binary(Code) of
        Bin when is_binary(Bin) -> Bin;
        _ -> error(badarg)
    catch error:_ -> error(badarg)
    end.
