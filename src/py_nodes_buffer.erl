%% @private
%% @doc A `py_buffer' passed to a call on a worker node.  A NIF resource
%% cannot cross nodes, so each such buffer gets a relay for the call:
%%
%% <ul>
%% <li>on the worker node, a relay process creates a buffer of its own (same
%%     `content_length', same seekability) that the call gets instead, and
%%     writes into it what arrives; it is that buffer's writer, so its death
%%     aborts it as a writer's death does;</li>
%% <li>on this node, a proxy process reads the original buffer itself
%%     (`py_nif:buffer_take/3': no Python, no worker thread of this node
%%     held) and passes the pieces to the relay, at most `?WINDOW' pieces of
%%     `?CHUNK' bytes that the relay has not yet written (it acknowledges
%%     each).  With nothing to read it waits in a receive for the buffer's
%%     `{py_buffer_readable, Token}'.</li>
%% </ul>
%%
%% End of data, an abort (or the writer's death) go the same way; a reader
%% closed on the worker node, the worker node's death or the call's end
%% abort the original buffer, so its writer's next write returns
%% `{error, closed}'.  See docs/nodes.md.
-module(py_nodes_buffer).

-export([relay_args/2, release/1, relay/2, proxy/4]).

-define(CHUNK, 262144).
-define(WINDOW, 8).

-record(pump, {buf :: py_nif:buffer(),
               relay :: pid(),
               rmon :: reference(),
               cmon :: reference(),                    %% on the call's owner
               inflight = 0 :: non_neg_integer(),     %% pieces not acknowledged
               reading = reading :: reading | {waiting, pos_integer()} | done}).

%% @doc Replaces each local `py_buffer' in a request's arguments by a
%% relayed buffer on `Node' (one per buffer, however often it appears).
%% A handle of a third node is refused.  The relays end with the call
%% (`release/1') or with the calling process.
-spec relay_args(node(), tuple()) -> {ok, tuple(), [pid()]} | {error, term()}.
relay_args(Node, Request) ->
    try walk(Request, Node, []) of
        {Request1, Relayed} -> {ok, Request1, proxies(Relayed)}
    catch
        throw:{relay_error, Error, Relayed} -> release(proxies(Relayed)), Error
    end.

proxies(Relayed) ->
    [Proxy || {_Buf, Proxy, _Remote} <- Relayed].

%% @doc Ends the relays of a finished call.
-spec release([pid()]) -> ok.
release(Proxies) ->
    [P ! call_done || P <- Proxies],
    ok.

walk(T, Node, Acc) when is_reference(T) ->
    case node(T) of
        Here when Here =:= node() ->
            case lists:keyfind(T, 1, Acc) of
                {T, _Proxy, Remote} -> {Remote, Acc};
                false ->
                    case is_buffer(T) of
                        true -> start(Node, T, Acc);
                        false -> {T, Acc}
                    end
            end;
        Node -> {T, Acc};
        Other -> throw({relay_error, {error, {foreign_handle, Other}}, Acc})
    end;
walk(T, Node, Acc) when is_tuple(T) ->
    {L, Acc1} = walk(tuple_to_list(T), Node, Acc),
    {list_to_tuple(L), Acc1};
walk([H | T], Node, Acc) ->
    {H1, Acc1} = walk(H, Node, Acc),
    {T1, Acc2} = walk(T, Node, Acc1),
    {[H1 | T1], Acc2};
walk(T, Node, Acc) when is_map(T) ->
    {L, Acc1} = walk(maps:to_list(T), Node, Acc),
    {maps:from_list(L), Acc1};
walk(T, _Node, Acc) ->
    {T, Acc}.

is_buffer(Ref) ->
    try py_nif:buffer_info(Ref) of
        #{} -> true
    catch error:badarg -> false
    end.

start(Node, Buf, Acc) ->
    Self = self(),
    Proxy = spawn(?MODULE, proxy, [Self, Node, Buf, py_nif:buffer_info(Buf)]),
    Mon = erlang:monitor(process, Proxy),
    receive
        {Proxy, {ok, Remote}} ->
            erlang:demonitor(Mon, [flush]),
            {Remote, [{Buf, Proxy, Remote} | Acc]};
        {Proxy, Error} ->
            erlang:demonitor(Mon, [flush]),
            throw({relay_error, Error, Acc});
        {'DOWN', Mon, process, Proxy, Reason} ->
            throw({relay_error, {error, {worker_exit, Reason}}, Acc})
    end.

%% ------------------------------------------------------------------ this node

%% @doc The proxy: starts the relay, then reads the buffer and passes the
%% pieces on until the stream or the call ends (or its caller: a killed
%% caller never says the call is done).
-spec proxy(pid(), node(), py_nif:buffer(), map()) -> ok.
proxy(Caller, Node, Buf, Info) ->
    CMon = erlang:monitor(process, Caller),
    Opts = #{content_length => maps:get(content_length, Info),
             keep_consumed => maps:get(seekable, Info),
             max_unread => ?CHUNK * 2},
    {Relay, RMon} = spawn_monitor(Node, ?MODULE, relay, [self(), Opts]),
    receive
        {Relay, {ok, Remote}} ->
            Caller ! {self(), {ok, Remote}},
            pump(#pump{buf = Buf, relay = Relay, rmon = RMon, cmon = CMon});
        {'DOWN', RMon, process, Relay, _} ->
            Caller ! {self(), {error, {node_down, Node}}}
    end,
    ok.

%% Reads while the window has room and the stream goes on; then waits for
%% an acknowledgement, the buffer's readable message or the end.
pump(#pump{inflight = N, reading = reading} = P) when N < ?WINDOW ->
    #pump{buf = Buf, relay = Relay} = P,
    Token = erlang:unique_integer([positive]),
    case py_nif:buffer_take(Buf, ?CHUNK, Token) of
        {ok, Bin} -> Relay ! {data, Bin}, pump(P#pump{inflight = N + 1});
        wait -> pump(P#pump{reading = {waiting, Token}});
        eof -> Relay ! eof, pump(P#pump{reading = done});
        {error, {aborted, Reason}} -> Relay ! {abort, Reason}, pump(P#pump{reading = done});
        {error, Reason} -> Relay ! {abort, Reason}, pump(P#pump{reading = done})
    end;
pump(#pump{buf = Buf, relay = Relay, rmon = RMon, cmon = CMon, inflight = N, reading = Reading} = P) ->
    receive
        {py_buffer_readable, Token} ->
            %% An older token's message (a write raced a take) is dropped.
            pump(case Reading of {waiting, Token} -> P#pump{reading = reading}; _ -> P end);
        {Relay, ack} ->
            pump(P#pump{inflight = N - 1});
        {Relay, closed} ->
            %% The reader on the worker node closed its buffer: the writer
            %% here gets {error, closed}.
            py_nif:buffer_abort(Buf, closed),
            pump(P#pump{reading = done});
        {'DOWN', RMon, process, Relay, _} ->
            py_nif:buffer_abort(Buf, closed);
        call_done ->
            %% The call returned: nobody reads the relayed buffer any more.
            exit(Relay, kill),
            py_nif:buffer_abort(Buf, closed);
        {'DOWN', CMon, process, _, _} ->
            exit(Relay, kill),
            py_nif:buffer_abort(Buf, closed)
    end.

%% ------------------------------------------------------------------ the worker node

%% @doc The relay, on the worker node: owns the buffer the call reads.
-spec relay(pid(), py_buffer:options()) -> ok.
relay(Proxy, Opts) ->
    {ok, Buf} = py_buffer:new(Opts),
    Mon = erlang:monitor(process, Proxy),
    Proxy ! {self(), {ok, Buf}},
    relay_loop(Proxy, Mon, Buf).

relay_loop(Proxy, Mon, Buf) ->
    receive
        {data, Bin} ->
            case py_buffer:write(Buf, Bin) of
                ok -> Proxy ! {self(), ack}, relay_loop(Proxy, Mon, Buf);
                {error, _} -> Proxy ! {self(), closed}, wait_end(Mon, Buf)
            end;
        eof ->
            _ = py_buffer:close(Buf), wait_end(Mon, Buf);
        {abort, writer_down} ->
            %% Our exit aborts the buffer as its writer's death does; a
            %% keeper holds the buffer meanwhile (see wait_end/2).
            _ = spawn(fun() -> wait_end(erlang:monitor(process, Proxy), Buf) end),
            exit(writer_down);
        {abort, Reason} when is_atom(Reason) ->
            py_buffer:abort(Buf, Reason), wait_end(Mon, Buf);
        {'DOWN', Mon, process, _, _} ->
            exit(proxy_down)
    end.

%% Holds the buffer until the proxy is done.  The call that reads it may
%% not have reached this node yet, and a resource nobody here holds is
%% freed: its reference would then arrive as a plain term.  It also keeps
%% the buffer's writer alive, so that its end is not taken for a death.
wait_end(Mon, Buf) ->
    put(relayed_buffer, Buf),
    receive {'DOWN', Mon, process, _, _} -> ok end.
