%% @doc Worker nodes: BEAM nodes on this host (or others), each with its own
%% embedded interpreter and GIL, reached over Erlang distribution.
%%
%% A pool is a process that starts `count' nodes with OTP's `peer' (same
%% emulator, code path, cookie and erlpy app env as this node), starts
%% erlpy on each, and starts a node again when it dies; the others keep
%% serving meanwhile.  The application's pool (`py_nodes', app env
%% `worker_nodes') serves `py:worker_node/1' and the target `worker_nodes';
%% `erlpy_http' starts pools of its own for `worker_nodes => N'.  A node
%% started separately joins with `add/1' and leaves with `remove/1'.
%%
%% The live nodes of a pool are rows `{Index, Node, Busy, Link}' of a
%% public ETS table named after the pool (`Busy': a counter of calls in
%% flight; `Link': the `py_nodes_link' that carries calls there), so callers
%% pick a node without asking the pool process.  See docs/nodes.md.
-module(py_nodes).
-behaviour(gen_server).

-export([start_link/1, add/1, add/2, remove/1, remove/2, nodes/0, nodes/1, os_pids/1,
         call/4, submit/2, foreign_handle/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-type pool() :: atom().
-type target() :: worker_nodes | {pool(), pos_integer(), non_neg_integer()}.
-type options() :: #{name := pool(), count := non_neg_integer(),
                     setup => [{module(), atom(), [term()]}],
                     teardown => [{module(), atom(), [term()]}],
                     app_env => [{atom(), term()}],
                     handler => {module(), map()}}.
-export_type([target/0, options/0]).

-record(slot, {index :: pos_integer(),
               node :: node(),
               peer :: pid() | undefined,      %% undefined: added, not ours
               state :: starting | up | recycling | down,
               link :: pid() | undefined,       %% py_nodes_link, while up
               up_at = 0 :: integer(),           %% monotonic ms
               delay = 200 :: pos_integer()}).   %% before the next restart
-record(state, {name :: pool(),
                schedulers :: pos_integer(),
                setup :: [{module(), atom(), [term()]}],
                teardown :: [{module(), atom(), [term()]}],
                app_env :: [{atom(), term()}],
                handler :: {module(), map()} | undefined,
                failed :: term(),
                slots = #{} :: #{pos_integer() => #slot{}}}).

%% The margin a caller waits beyond the call's own timeout (enforced on the
%% worker node) before it gives up on a node that stopped answering.
-define(MARGIN, 5000).

%% ------------------------------------------------------------------ API

%% @doc Starts a pool registered as `name' with `count' worker nodes, and
%% waits until each runs erlpy (and the `setup' calls, run on each node
%% after erlpy starts there, every time it starts).  `app_env' overrides
%% erlpy's app env on the nodes (default: this node's, with no worker
%% nodes of their own).  Fails with `{not_distributed, _}' when `count' is
%% above 0 and this node is not distributed.
-spec start_link(options()) -> {ok, pid()} | ignore | {error, term()}.
start_link(#{name := Name} = Opts) ->
    gen_server:start_link({local, Name}, ?MODULE, Opts, []).

%% @doc Adds a node started separately (same cookie, erlpy's code on its
%% path) to the application's pool; erlpy is started there with this
%% node's app env unless it runs already.
-spec add(node()) -> {ok, pos_integer()} | {error, term()}.
add(Node) -> add(py_nodes, Node).

%% @doc `add/1' for the pool `Pool'.
-spec add(pool(), node()) -> {ok, pos_integer()} | {error, term()}.
add(Pool, Node) when is_atom(Node) -> gen_server:call(Pool, {add, Node}, 60000);
add(_, _) -> error(badarg).

%% @doc Takes a node added with `add/1' out of the pool (it keeps running),
%% or stops one the pool started.  Calls in flight there finish.
-spec remove(node()) -> ok | {error, not_found}.
remove(Node) -> remove(py_nodes, Node).

%% @doc `remove/1' for the pool `Pool'.
-spec remove(pool(), node()) -> ok | {error, not_found}.
remove(Pool, Node) when is_atom(Node) -> gen_server:call(Pool, {remove, Node}, 60000);
remove(_, _) -> error(badarg).

%% @doc The live worker nodes of the application's pool, by index.
-spec nodes() -> [{pos_integer(), node()}].
nodes() -> ?MODULE:nodes(py_nodes).

%% @doc The live worker nodes of `Pool', by index.
-spec nodes(pool()) -> [{pos_integer(), node()}].
nodes(Pool) ->
    try lists:sort([{I, N} || {I, N, _, _} <- ets:tab2list(Pool)])
    catch error:badarg -> []
    end.

%% @doc The OS process id of each live node of `Pool'.
-spec os_pids(pool()) -> [{node(), string()}].
os_pids(Pool) ->
    [{N, erpc:call(N, os, getpid, [], 5000)} || {_, N} <- ?MODULE:nodes(Pool)].

%% @private
%% @doc Runs a `py' request on a worker node (`py:run/3' there).  Called by
%% `py' for the targets `worker_nodes' and `py:worker_node/1,2'.
-spec call(target(), term(), timeout(), map()) -> term().
call(Target, Request, Timeout, Options) ->
    case prepare(Target, Request) of
        {ok, Run} -> Run(Timeout, Options, none);
        {error, _} = Error -> Error
    end.

%% @private
%% @doc `py:submit/5' for a worker node: `{ok, Ref}' at once, and the
%% result as `{Ref, Result}' later.  A process of this node waits for it
%% on the caller's behalf; the call belongs to the caller all the same (its
%% death cancels it there, and handles in the result live as long as it
%% does).
-spec submit(target(), tuple()) -> {ok, reference()} | {error, term()}.
submit(Target, Request) ->
    case prepare(Target, Request) of
        {ok, Run} ->
            Ref = make_ref(),
            Caller = self(),
            _ = spawn(fun() ->
                              Watch = erlang:monitor(process, Caller),
                              Caller ! {Ref, Run(infinity, #{}, Watch)}
                      end),
            {ok, Ref};
        {error, _} = Error ->
            Error
    end.

%% Picks the node and relays the request's buffers, for the calling
%% process (the call's owner: the relays and the link watch it); then a fun
%% that runs the call there and waits for it, with a timeout, options, and
%% a monitor whose 'DOWN' gives the call up (or none).  The node's busy
%% count goes up here; remote/4 takes it down (or the link, if the owner
%% died).
prepare(Target, Request) ->
    case pick(Target) of
        {ok, Node, Busy, Link} ->
            case py_nodes_buffer:relay_args(Node, Request) of
                {ok, Request1, Relays} ->
                    Owner = self(),
                    counters:add(Busy, 1, 1),
                    {ok, fun(Timeout, Options, Watch) ->
                                 Call = {Owner, ctx(Target), Request1, Timeout, Options, Busy},
                                 try remote(Node, Link, Call, Watch)
                                 after
                                     py_nodes_buffer:release(Relays)
                                 end
                         end};
                {error, _} = Error ->
                    Error
            end;
        {error, _} = Error ->
            Error
    end.

%% @private
%% @doc For a local call: the worker node whose handle is among the
%% request's arguments (top level only: a cheap check), or `false'.
-spec foreign_handle(tuple()) -> node() | false.
foreign_handle(Request) ->
    Args = case Request of
               {call, _, _, A, K} -> A ++ maps:values(K);
               {eval, _, L} -> maps:values(L);
               _ -> []
           end,
    Here = node(),
    case [node(R) || R <- Args, is_reference(R), node(R) =/= Here] of
        [] -> false;
        Nodes -> first_worker(Nodes)
    end.

first_worker([Node | Rest]) ->
    case catch ets:match(py_nodes, {'_', Node, '_', '_'}) of
        [_ | _] -> Node;
        _ -> first_worker(Rest)
    end;
first_worker([]) ->
    false.

%% ------------------------------------------------------------------ the call

pick(worker_nodes) ->
    case catch ets:tab2list(py_nodes) of
        [_ | _] = Rows ->
            {_, {_, Node, Busy, Link}} = lists:min([{counters:get(B, 1), R} || {_, _, B, _} = R <- Rows]),
            {ok, Node, Busy, Link};
        _ -> {error, no_worker_nodes}
    end;
pick({Pool, Index, _Ctx}) ->
    case catch ets:lookup(Pool, Index) of
        [{_, Node, Busy, Link}] -> {ok, Node, Busy, Link};
        _ -> {error, no_worker_nodes}
    end.

ctx({_, _, Ctx}) -> Ctx;
ctx(worker_nodes) -> 0.

%% The call goes through the node's link (py_nodes_link), which watches
%% its owner for the worker node; the reply comes straight back to our
%% alias.  The link's end (its node or call server gone) ends the wait at
%% once.  The node's busy count comes down here, at once (the next call's
%% pick sees it), unless the owner died: then the link takes it down.
remote(Node, Link, {Owner, Ctx, Request, Timeout, Options, Busy}, Watch) ->
    Alias = erlang:monitor(process, Link, [{alias, reply_demonitor}]),
    Link ! {call, Owner, Alias, Ctx, Request, Timeout, Options, Busy},
    Wait = case Timeout of infinity -> infinity; _ -> min(Timeout + ?MARGIN, 16#ffffffff) end,
    Result = wait_reply(Node, Link, Alias, Wait, Watch),
    Result =:= {error, owner_down} orelse counters:sub(Busy, 1, 1),
    Result.

wait_reply(Node, Link, Alias, Wait, Watch) ->
    receive
        {Alias, Reply} ->
            Link ! {done, Alias},
            Reply;
        {'DOWN', Alias, process, _, {shutdown, {server_down, _, Reason}}} ->
            {error, {worker_exit, Reason}};
        {'DOWN', Alias, process, _, _} ->
            {error, {node_down, Node}};
        {'DOWN', Watch, process, _, _} ->
            %% A submitted call's owner died: the link gives the call up.
            erlang:demonitor(Alias, [flush]),
            {error, owner_down}
    after Wait ->
            erlang:demonitor(Alias, [flush]),
            Link ! {cancel, Alias},
            receive {Alias, Reply} -> Reply after 0 -> {error, timeout} end
    end.

%% ------------------------------------------------------------------ the pool

%% @private
-spec init(options()) -> {ok, #state{}} | {stop, term()}.
init(#{name := Name, count := Count} = Opts) ->
    process_flag(trap_exit, true),
    Name = ets:new(Name, [named_table, public, set, {read_concurrency, true}]),
    Env = [{K, V} || {K, V} <- application:get_all_env(erlpy), K =/= worker_nodes, K =/= included_applications],
    %% The cores shared out: a node's scheduler threads beyond that only
    %% take a core from its (or another node's) Python, and cost a context
    %% switch each time they wake (measured: /burn served with --workers 2
    %% on 2 cores spent 274 µs per request in 2 scheduler threads per node,
    %% 139 µs in one).
    Cores = case erlang:system_info(logical_processors_available) of
                unknown -> erlang:system_info(schedulers_online);
                Available -> Available
            end,
    S = #state{name = Name, setup = maps:get(setup, Opts, []),
               schedulers = max(1, (Cores + Count - 1) div max(1, Count)),
               teardown = maps:get(teardown, Opts, []),
               app_env = maps:get(app_env, Opts, Env),
               handler = maps:get(handler, Opts, undefined)},
    case Count > 0 andalso node() =:= nonode@nohost of
        true ->
            Why = "erlpy: worker_nodes needs a distributed node: start it with -sname or "
                  "-name (or net_kernel:start/1) before erlpy",
            logger:error(Why),
            {stop, {not_distributed, list_to_binary(Why)}};
        false ->
            S1 = lists:foldl(fun(I, Acc) -> start_slot(I, Acc) end, S, lists:seq(1, Count)),
            await_started(S1, erlang:monotonic_time(millisecond) + 60000)
    end.

%% Peers boot in parallel; init returns once each runs erlpy (and fails
%% if one did not: a wrong app env or app is better told at once).
await_started(#state{failed = Failed} = S, _Deadline) when Failed =/= undefined ->
    terminate(Failed, S),
    case Failed of
        {throw, {setup_failed, Reason}} -> {stop, Reason};
        _ -> {stop, {worker_node_failed, Failed}}
    end;
await_started(#state{slots = Slots} = S, Deadline) ->
    case [I || #slot{index = I, state = starting} <- maps:values(Slots)] of
        [] ->
            {ok, S};
        _ ->
            receive
                {{started, _}, _} = Msg -> {noreply, S1} = handle_info(Msg, S), await_started(S1, Deadline);
                {'EXIT', _, _} = Msg -> {noreply, S1} = handle_info(Msg, S), await_started(S1, Deadline)
            after max(0, Deadline - erlang:monotonic_time(millisecond)) ->
                    {stop, worker_nodes_did_not_start}
            end
    end.

start_slot(I, #state{name = Name, slots = Slots, schedulers = Schedulers} = S) ->
    [Front, Host] = string:split(atom_to_list(node()), "@"),
    NodeName = lists:flatten(io_lib:format("~s_~s_w~b", [Front, Name, I])),
    Paths = [P || P <- code:get_path(), not lists:prefix(code:lib_dir(), P), P =/= "."],
    Peer = started(peer:start_link(#{name => NodeName, host => Host,
                                   longnames => net_kernel:longnames(),
                                   exec => {filename:join(bindir(), "erlexec"), []},
                                   %% No busy waiting by idle schedulers: a worker
                                   %% node mostly waits for Python, beside others.
                                   args => ["-setcookie", atom_to_list(erlang:get_cookie()),
                                            "-hidden", "+sbwt", "none", "+sbwtdcpu", "none",
                                            "+sbwtdio", "none", "+S", integer_to_list(Schedulers),
                                            "-pa" | Paths],
                                   wait_boot => {self(), {started, I}},
                                   shutdown => {halt, 5000}})),
    Delay = case maps:find(I, Slots) of {ok, #slot{delay = D}} -> D; error -> 200 end,
    S#state{slots = Slots#{I => #slot{index = I, node = list_to_atom(NodeName ++ "@" ++ Host),
                                      peer = Peer, state = starting, delay = Delay}}}.

started({ok, Peer}) -> Peer;
started({ok, Peer, _Node}) -> Peer.

%% The emulator this node runs (ASan's wrapper under scripts/test-asan).
bindir() ->
    case os:getenv("BINDIR") of
        false -> filename:join(code:root_dir(), "erts-" ++ erlang:system_info(version) ++ "/bin");
        Dir -> Dir
    end.

%% Starts erlpy on a fresh node with our app env, then the setup calls.
setup_node(Node, #state{app_env = Env, setup = Setup}) ->
    ok = erpc:call(Node, application, load, [erlpy], 30000),
    [ok = erpc:call(Node, application, set_env, [erlpy, K, V], 30000) || {K, V} <- Env],
    ok = erpc:call(Node, application, set_env, [erlpy, worker_nodes, 0], 30000),
    {ok, _} = erpc:call(Node, application, ensure_all_started, [erlpy], 60000),
    %% The node is detached: what Python prints there comes here.
    {ok, none} = erpc:call(Node, py, call, [erlpy_stdio, install, []], 60000),
    lists:foreach(fun({M, F, A}) ->
                          case erpc:call(Node, M, F, A, 60000) of
                              {ok, _} -> ok;
                              %% The step's own reason (an app whose ASGI
                              %% startup fails) becomes the pool's.
                              {error, Reason} -> throw({setup_failed, Reason})
                          end
                  end, Setup).

up(#slot{index = I, node = Node} = Slot, #state{name = Name, slots = Slots} = S) ->
    erlang:monitor_node(Node, true),
    Link = py_nodes_link:start_link(Node),
    true = ets:insert(Name, {I, Node, counters:new(1, [write_concurrency]), Link}),
    S#state{slots = Slots#{I => Slot#slot{state = up, link = Link,
                                          up_at = erlang:monotonic_time(millisecond)}}}.

%% A link that ended while its node is up (its call server restarting)
%% is started again after a pause; calls meanwhile find the node gone.
link_ended(Link, #state{name = Name, slots = Slots} = S) ->
    case [Slot || #slot{link = L} = Slot <- maps:values(Slots), L =:= Link] of
        [#slot{index = I, state = St} = Slot] when St =:= up; St =:= recycling ->
            ets:delete(Name, I),
            erlang:send_after(100, self(), {relink, I}),
            S#state{slots = Slots#{I := Slot#slot{link = undefined}}};
        [#slot{index = I} = Slot] ->
            S#state{slots = Slots#{I := Slot#slot{link = undefined}}};
        [] ->
            S
    end.

%% The slot's link goes: it ends once the calls in flight are done.
retire(#slot{link = Link}) when is_pid(Link) ->
    unlink(Link),
    Link ! retire;
retire(_) ->
    ok.

%% @private
-spec handle_call(term(), gen_server:from(), #state{}) -> {reply, term(), #state{}}.
handle_call({add, Node}, _From, #state{slots = Slots} = S) ->
    case [I || #slot{index = I, node = N} <- maps:values(Slots), N =:= Node] of
        [I] ->
            {reply, {ok, I}, S};
        [] ->
            I = lists:max([0 | maps:keys(Slots)]) + 1,
            case net_adm:ping(Node) of
                pong ->
                    try
                        case erpc:call(Node, application, which_applications, [], 10000) of
                            Apps when is_list(Apps) ->
                                lists:keymember(erlpy, 1, Apps) orelse setup_node(Node, S)
                        end,
                        {reply, {ok, I}, up(#slot{index = I, node = Node, state = up}, S)}
                    catch Class:Reason ->
                            {reply, {error, {Class, Reason}}, S}
                    end;
                pang ->
                    {reply, {error, nodedown}, S}
            end
    end;
handle_call({remove, Node}, _From, #state{name = Name, slots = Slots} = S) ->
    case [Slot || #slot{node = N} = Slot <- maps:values(Slots), N =:= Node] of
        [#slot{index = I, peer = Peer} = Slot] ->
            ets:delete(Name, I),
            retire(Slot),
            erlang:monitor_node(Node, false),
            is_pid(Peer) andalso stop_peer(Peer, Node, S),
            {reply, ok, S#state{slots = maps:remove(I, Slots)}};
        [] ->
            {reply, {error, not_found}, S}
    end;
handle_call({may_recycle, Node}, _From, #state{slots = Slots} = S) ->
    %% One node at a time, and only while every other one is up: a node
    %% recycling leaves the others serving.
    case lists:partition(fun(#slot{node = N}) -> N =:= Node end, maps:values(Slots)) of
        {[#slot{index = I, state = up} = Slot], Others} ->
            case lists:all(fun(#slot{state = St}) -> St =:= up end, Others) of
                true -> {reply, true, S#state{slots = Slots#{I := Slot#slot{state = recycling}}}};
                false -> {reply, false, S}
            end;
        _ ->
            {reply, false, S}
    end;
handle_call(Request, _From, #state{handler = {Handler, Info}} = S) ->
    {reply, Handler:handle_pool_call(Request, [N || {_, N} <- ?MODULE:nodes(S#state.name)], Info), S}.

%% @private
-spec handle_cast(term(), #state{}) -> {noreply, #state{}}.
handle_cast({recycle, Node}, S) ->
    %% The node asks for a fresh start (erlpy_nodes_http, max_requests).
    {noreply, down(Node, "recycled", S)};
handle_cast(_Msg, S) ->
    {noreply, S}.

%% @private
-spec handle_info(term(), #state{}) -> {noreply, #state{}}.
handle_info({{started, I}, {started, _Node, Peer}}, #state{slots = Slots} = S) ->
    case maps:find(I, Slots) of
        {ok, #slot{peer = Peer, node = Node} = Slot} ->
            try setup_node(Node, S) of
                ok -> {noreply, up(Slot, S)}
            catch Class:Reason ->
                    logger:error("erlpy: worker node ~s did not start erlpy: ~p:~p", [Node, Class, Reason]),
                    catch peer:stop(Peer),
                    {noreply, down(Node, S#state{failed = {Class, Reason}})}
            end;
        _ ->
            {noreply, S}
    end;
handle_info({nodedown, Node}, S) ->
    {noreply, down(Node, S)};
handle_info({'EXIT', Pid, _Reason}, #state{slots = Slots} = S) ->
    case [Slot || #slot{peer = P} = Slot <- maps:values(Slots), P =:= Pid] of
        [#slot{node = Node}] -> {noreply, down(Node, S)};
        [] -> {noreply, link_ended(Pid, S)}
    end;
handle_info({relink, I}, #state{name = Name, slots = Slots} = S) ->
    case maps:find(I, Slots) of
        {ok, #slot{state = St, link = undefined, node = Node} = Slot} when St =:= up; St =:= recycling ->
            Link = py_nodes_link:start_link(Node),
            true = ets:insert(Name, {I, Node, counters:new(1, [write_concurrency]), Link}),
            {noreply, S#state{slots = Slots#{I := Slot#slot{link = Link}}}};
        _ ->
            {noreply, S}
    end;
handle_info({restart, I}, #state{slots = Slots} = S) ->
    case maps:find(I, Slots) of
        {ok, #slot{state = down}} -> {noreply, start_slot(I, S)};
        _ -> {noreply, S}
    end;
handle_info({log, #{level := Level, msg := Msg, meta := Meta0}}, S) ->
    %% A worker node's log event (erlpy_nodes_http forwards them), logged
    %% here as this process's: its pid and group leader stay behind.
    Meta = maps:with([domain, time, mfa, file, line, report_cb], Meta0),
    _ = case Msg of
            {string, Text} -> logger:log(Level, "~ts", [Text], Meta);
            {report, Report} -> logger:log(Level, Report, Meta);
            {Format, Args} -> logger:log(Level, Format, Args, Meta)
        end,
    {noreply, S};
handle_info(_Msg, S) ->
    {noreply, S}.

%% A node of ours that died is started again (after a short pause, so a
%% node that crashes at start does not spin); an added one leaves the pool.
down(Node, S) ->
    down(Node, "down", S).

down(Node, Why, #state{name = Name, slots = Slots} = S) ->
    case [Slot || #slot{node = N} = Slot <- maps:values(Slots), N =:= Node] of
        [#slot{state = down}] ->
            S;
        [#slot{index = I, peer = undefined}] ->
            ets:delete(Name, I),
            logger:warning("erlpy: worker node ~s is down; removed from the pool", [Node]),
            S#state{slots = maps:remove(I, Slots)};
        [#slot{index = I, peer = Peer, up_at = UpAt, delay = Delay0} = Slot] ->
            ets:delete(Name, I),
            catch peer:stop(Peer),
            %% A node that dies young (or never came up) waits twice as
            %% long each time, up to 10 s.
            Delay = case erlang:monotonic_time(millisecond) - UpAt < 10000 of
                        true when Why =:= "down" -> min(2 * Delay0, 10000);
                        _ -> 200
                    end,
            Why =:= "down" andalso
                logger:warning("erlpy: worker node ~s is down; starting it again in ~b ms", [Node, Delay]),
            erlang:send_after(Delay, self(), {restart, I}),
            S#state{slots = Slots#{I => Slot#slot{state = down, peer = undefined, delay = Delay}}};
        [] ->
            S
    end.

%% @private
-spec terminate(term(), #state{}) -> ok.
terminate(_Reason, #state{slots = Slots} = S) ->
    Ours = [{P, N} || #slot{peer = P, node = N} <- maps:values(Slots), is_pid(P)],
    %% In parallel: each node's teardown may wait (a graceful HTTP stop).
    Stoppers = [spawn_monitor(fun() -> stop_peer(P, N, S) end) || {P, N} <- Ours],
    [receive {'DOWN', M, process, _, _} -> ok end || {_, M} <- Stoppers],
    ok.

stop_peer(Peer, Node, #state{teardown = Teardown}) ->
    lists:foreach(fun({M, F, A}) -> catch erpc:call(Node, M, F, A, infinity) end, Teardown),
    catch peer:stop(Peer),
    true.
