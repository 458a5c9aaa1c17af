%% @private
%% @doc An acceptor: accepts a connection, counts it (an `atomics' add: no
%% call to another process), starts its `erlpy_http_conn' process and hands
%% it the socket.  Over `max_connections' the connection gets a 503.
-module(erlpy_http_acceptor).

-export([start_link/1, loop/1]).

%% @doc Starts an acceptor linked to its supervisor.
-spec start_link(map()) -> {ok, pid()}.
start_link(Conf) ->
    {ok, proc_lib:spawn_link(?MODULE, loop, [Conf])}.

%% @private
-spec loop(map()) -> ok.
loop(#{listen := Listen, max_connections := Max} = Conf) ->
    case gen_tcp:accept(Listen) of
        {ok, Socket} ->
            Pid = proc_lib:spawn(erlpy_http_conn, init, [Socket, Conf]),
            Verdict = case erlpy_http_listener:register(Conf, Pid) > Max of
                          true -> erlpy_http_listener:unregister(Conf, Pid), refuse;
                          false -> go
                      end,
            case gen_tcp:controlling_process(Socket, Pid) of
                ok -> ok;
                {error, _} -> gen_tcp:close(Socket)  % closed by the peer already
            end,
            Pid ! {erlpy_http, Verdict},
            loop(Conf);
        {error, closed} ->
            %% The server is stopping.
            ok;
        {error, _} ->
            %% emfile, econnaborted...: the listening socket is still good.
            loop(Conf)
    end.
