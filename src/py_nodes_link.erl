%% @private
%% @doc A front node's link to one worker node of a pool: the process that
%% sends calls to the node's call server (`py_nodes_server') and stands in
%% for the callers there.  It watches each call's owner (a local monitor,
%% no traffic to the worker node) and cancels the call there when the owner
%% dies first or gives up; a call whose owner died it also takes off the
%% node's busy count (the caller does that otherwise, at once).  It ends when the worker node or its
%% call server goes, and callers, who monitor it, learn so at once; when the
%% pool ends (its calls are cancelled first); or, told to `retire' (its
%% node left the pool), once its calls in flight are done.  Its ends are
%% `{shutdown, _}' exits: expected, so not logged as crashes.
%%
%% A caller: monitors the link with an alias (`py_nodes:call/4'), sends it
%% `{call, Owner, Alias, Ctx, Request, Timeout, Options, Busy}', waits for
%% `{Alias, Reply}' from the worker node, then sends `{done, Alias}' (or
%% `{cancel, Alias}' when it gives up).
-module(py_nodes_link).

-export([start_link/1, init/2]).

%% @doc Starts the link to `Node' (linked to the pool that starts it).
-spec start_link(node()) -> pid().
start_link(Node) ->
    proc_lib:spawn_link(?MODULE, init, [self(), Node]).

%% @private
-spec init(pid(), node()) -> no_return().
init(Pool, Node) ->
    process_flag(trap_exit, true),
    erlang:monitor_node(Node, true),
    Server = erlang:monitor(process, {py_nodes_server, Node}),
    loop(#{node => Node, server => Server, pool => Pool, retiring => false}, #{}).

%% Calls: the caller's Alias => {the monitor on the owner, the busy count},
%% and the monitor => Alias.
loop(#{retiring := true}, Calls) when map_size(Calls) =:= 0 ->
    exit(normal);
loop(#{node := Node, server := Server, pool := Pool} = L, Calls) ->
    receive
        {call, Owner, Alias, Ctx, Request, Timeout, Options, Busy} ->
            erlang:send({py_nodes_server, Node}, {call, Owner, Alias, Ctx, Request, Timeout, Options}),
            Mon = erlang:monitor(process, Owner),
            loop(L, Calls#{Alias => {Mon, Busy}, Mon => Alias});
        {done, Alias} ->
            loop(L, forget(Alias, Calls));
        {cancel, Alias} ->
            erlang:send({py_nodes_server, Node}, {cancel, Alias}),
            loop(L, forget(Alias, Calls));
        {'DOWN', Server, process, _, noconnection} ->
            %% The connection went: the node's death, whichever of this
            %% and nodedown comes first.
            exit({shutdown, {node_down, Node}});
        {'DOWN', Server, process, _, Reason} ->
            exit({shutdown, {server_down, Node, Reason}});
        {'DOWN', Mon, process, _, _} ->
            case maps:find(Mon, Calls) of
                {ok, Alias} ->
                    erlang:send({py_nodes_server, Node}, {cancel, Alias}),
                    {_, Busy} = maps:get(Alias, Calls),
                    counters:sub(Busy, 1, 1),
                    loop(L, forget(Alias, Calls));
                error ->
                    loop(L, Calls)
            end;
        {nodedown, Node} ->
            exit({shutdown, {node_down, Node}});
        {'EXIT', Pool, Reason} ->
            %% The pool ends: nobody will wait for these calls.
            _ = [erlang:send({py_nodes_server, Node}, {cancel, A}) || {A, {_Mon, _Busy}} <- maps:to_list(Calls)],
            exit(Reason);
        retire ->
            loop(L#{retiring := true}, Calls);
        _ ->
            loop(L, Calls)
    end.

forget(Alias, Calls) ->
    case maps:take(Alias, Calls) of
        {{Mon, _Busy}, Calls1} ->
            erlang:demonitor(Mon, [flush]),
            maps:remove(Mon, Calls1);
        error ->
            Calls
    end.
