%% @private
%% @doc A `py_buffer' passed to a call on a worker node.  A NIF resource
%% cannot cross nodes, so each such buffer gets a relay for the call:
%%
%% <ul>
%% <li>on the worker node, a relay process creates a buffer of its own (same
%%     `content_length', same seekability) that the call gets instead, and
%%     writes into it what arrives; it is that buffer's writer, so its death
%%     aborts it as a writer's death does;</li>
%% <li>on this node, a proxy process submits `erlpy_nodes.forward' (a Python
%%     reader of the original buffer, on any free worker), passes what it
%%     reads to the relay, and feeds back one credit per piece the relay has
%%     written (a window of `?WINDOW' pieces of `?CHUNK' bytes).</li>
%% </ul>
%%
%% End of data, an abort (or the writer's death) go the same way; a reader
%% closed on the worker node, the worker node's death or the call's end
%% abort the original buffer, so its writer's next write returns
%% `{error, closed}'.  See docs/nodes.md.
-module(py_nodes_buffer).

-export([relay_args/2, release/1, relay/2, proxy/4]).

-define(CHUNK, 65536).
-define(WINDOW, 8).

%% @doc Replaces each local `py_buffer' in a request's arguments by a
%% relayed buffer on `Node'.  A handle of a third node is refused.
-spec relay_args(node(), tuple()) -> {ok, tuple(), [pid()]} | {error, term()}.
relay_args(Node, Request) ->
    try walk(Request, Node, []) of
        {Request1, Proxies} -> {ok, Request1, Proxies}
    catch
        throw:{relay_error, Error, Proxies} -> release(Proxies), Error
    end.

%% @doc Ends the relays of a finished call.
-spec release([pid()]) -> ok.
release(Proxies) ->
    [P ! call_done || P <- Proxies],
    ok.

walk(T, Node, Acc) when is_reference(T) ->
    case node(T) of
        Here when Here =:= node() ->
            case is_buffer(T) of
                true -> start(Node, T, Acc);
                false -> {T, Acc}
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
            {Remote, [Proxy | Acc]};
        {Proxy, Error} ->
            erlang:demonitor(Mon, [flush]),
            throw({relay_error, Error, Acc});
        {'DOWN', Mon, process, Proxy, Reason} ->
            throw({relay_error, {error, {worker_exit, Reason}}, Acc})
    end.

%% ------------------------------------------------------------------ this node

%% @doc The proxy: starts the relay, then the Python reader, and passes
%% messages between them until the stream or the call ends.
-spec proxy(pid(), node(), py_nif:buffer(), map()) -> ok.
proxy(Caller, Node, Buf, Info) ->
    Opts = #{content_length => maps:get(content_length, Info),
             keep_consumed => maps:get(seekable, Info),
             max_unread => ?CHUNK * 2},
    {Relay, RMon} = spawn_monitor(Node, ?MODULE, relay, [self(), Opts]),
    receive
        {Relay, {ok, Remote}} ->
            {ok, Acks} = py_buffer:new(),
            case py:submit(any, erlpy_nodes, forward, [Buf, self(), Acks, ?CHUNK, ?WINDOW], #{}) of
                {ok, Ref} ->
                    Caller ! {self(), {ok, Remote}},
                    proxy_loop(Buf, Acks, Relay, RMon, Ref, Node);
                {error, _} = Error ->
                    Caller ! {self(), Error}
            end;
        {'DOWN', RMon, process, Relay, _} ->
            Caller ! {self(), {error, {node_down, Node}}}
    end,
    ok.

proxy_loop(Buf, Acks, Relay, RMon, Ref, Node) ->
    proxy_loop(Buf, Acks, Relay, RMon, Ref, Node, running).

proxy_loop(Buf, Acks, Relay, RMon, Ref, Node, Reader) ->
    Loop = fun(R) -> proxy_loop(Buf, Acks, Relay, RMon, Ref, Node, R) end,
    receive
        {data, Bin} -> Relay ! {data, Bin}, Loop(Reader);
        {eof} -> Relay ! eof, Loop(Reader);
        {abort, Reason} -> Relay ! {abort, Reason}, Loop(Reader);
        {Relay, ack} -> _ = py_buffer:write(Acks, <<1>>), Loop(Reader);
        {Relay, closed} ->
            %% The reader on the worker node closed its buffer.
            py_nif:buffer_abort(Buf, closed), Loop(Reader);
        {Ref, _ForwardResult} ->
            %% The reader here ended; wait for the relay or the call's end.
            Loop(done);
        {'DOWN', RMon, process, Relay, _} ->
            py_nif:buffer_abort(Buf, closed),
            _ = py_buffer:close(Acks),
            await_forwarder(Ref, Reader);
        call_done ->
            %% The call returned: nobody reads the relayed buffer any more.
            exit(Relay, kill),
            py_nif:buffer_abort(Buf, closed),
            _ = py_buffer:close(Acks),
            await_forwarder(Ref, Reader)
    end.

%% The job follows its caller (this process): wait for it to end so that
%% it never runs on behalf of a process that is gone.  (The abort above
%% ends its reads at once.)
await_forwarder(_Ref, done) ->
    ok;
await_forwarder(Ref, running) ->
    receive {Ref, _} -> ok after 5000 -> ok end.

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
