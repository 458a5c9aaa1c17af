%% @private
%% @doc A front node's link to one worker node of a pool: the process that
%% sends calls to the node's call server (`py_nodes_server') and stands in
%% for the callers there.  It watches each caller (a local monitor, no
%% traffic to the worker node) and cancels the call there when the caller
%% dies first or gives up.  It ends when the worker node or its call server
%% goes, and callers, who monitor it, learn so at once; or, told to
%% `retire' (its node left the pool), once its calls in flight are done.
%%
%% A caller: monitors the link with an alias (`py_nodes:call/4'), sends it
%% `{call, Caller, Alias, Ctx, Request, Timeout, Options}', waits for
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
init(_Pool, Node) ->
    erlang:monitor_node(Node, true),
    Server = erlang:monitor(process, {py_nodes_server, Node}),
    loop(Node, Server, #{}, false).

%% Calls: the caller's Alias => the monitor on the caller, and back.
loop(_Node, _Server, Calls, true) when map_size(Calls) =:= 0 ->
    exit(normal);
loop(Node, Server, Calls, Retiring) ->
    receive
        {call, Caller, Alias, Ctx, Request, Timeout, Options} ->
            erlang:send({py_nodes_server, Node}, {call, Caller, Alias, Ctx, Request, Timeout, Options}),
            Mon = erlang:monitor(process, Caller),
            loop(Node, Server, Calls#{Alias => Mon, Mon => Alias}, Retiring);
        {done, Alias} ->
            loop(Node, Server, forget(Alias, Calls), Retiring);
        {cancel, Alias} ->
            erlang:send({py_nodes_server, Node}, {cancel, Alias}),
            loop(Node, Server, forget(Alias, Calls), Retiring);
        {'DOWN', Server, process, _, Reason} ->
            exit({server_down, Node, Reason});
        {'DOWN', Mon, process, _, _} ->
            case maps:take(Mon, Calls) of
                {Alias, Calls1} ->
                    erlang:send({py_nodes_server, Node}, {cancel, Alias}),
                    loop(Node, Server, maps:remove(Alias, Calls1), Retiring);
                error ->
                    loop(Node, Server, Calls, Retiring)
            end;
        retire ->
            loop(Node, Server, Calls, true);
        {nodedown, Node} ->
            exit({node_down, Node});
        _ ->
            loop(Node, Server, Calls, Retiring)
    end.

forget(Alias, Calls) ->
    case maps:take(Alias, Calls) of
        {Mon, Calls1} ->
            erlang:demonitor(Mon, [flush]),
            maps:remove(Mon, Calls1);
        error ->
            Calls
    end.
