%% Helpers shared by the suites that run bin/erlpy as an OS process
%% (erlpy_cli_SUITE, erlpy_nodes_http_SUITE).  A server is a map with the
%% port and the OS pid; the pid is also written to Dir/os_pid, for
%% erlpy_test:kill_os_group/1 at the end of the test case.
-module(erlpy_test_cli).
-export([erlpy/0, start/2, ports/2, signal/2, wait_exit/1]).

%% The path of bin/erlpy.
erlpy() ->
    Src = proplists:get_value(source, ?MODULE:module_info(compile)),
    filename:join([filename:dirname(filename:dirname(Src)), "bin", "erlpy"]).

%% Starts bin/erlpy with Args in Dir, through env(1), which execs it with
%% SIGINT's default disposition: a test runner started in the background
%% has it ignored, and a shell cannot trap a signal ignored when it started.
start(Dir, Args) ->
    Port = open_port({spawn_executable, os:find_executable("env")},
                     [{args, ["--default-signal=INT", erlpy() | Args]}, {cd, Dir},
                      exit_status, stderr_to_stdout, binary]),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    ok = file:write_file(filename:join(Dir, "os_pid"), integer_to_list(OsPid)),
    #{port => Port, os_pid => OsPid}.

%% The ports of its first N "listening at" lines, once it has printed them.
ports(Server, N) ->
    ports(Server, N, <<>>).

ports(#{port := Port} = Server, N, Acc) ->
    case re:run(Acc, "listening at http://[^:]+:([0-9]+)/", [global, {capture, all_but_first, list}]) of
        {match, Ms} when length(Ms) >= N -> [list_to_integer(P) || [P] <- lists:sublist(Ms, N)];
        _ ->
            receive
                {Port, {data, D}} -> ports(Server, N, <<Acc/binary, D/binary>>);
                {Port, {exit_status, S}} -> ct:fail("bin/erlpy exited (~b): ~s", [S, Acc])
            after 60000 -> ct:fail("bin/erlpy is not listening: ~s", [Acc])
            end
    end.

signal(#{os_pid := Pid}, Sig) ->
    os:cmd("kill -" ++ Sig ++ " " ++ integer_to_list(Pid)).

%% {ExitStatus, Output} once it exits (60 s at most).
wait_exit(#{port := Port}) ->
    wait_exit(Port, []).

wait_exit(Port, Acc) ->
    receive
        {Port, {data, D}} -> wait_exit(Port, [Acc, D]);
        {Port, {exit_status, S}} ->
            Out = unicode:characters_to_list(iolist_to_binary(Acc)),
            ct:log("exit status ~b:~n~ts", [S, Out]),
            {S, Out}
    after 60000 -> ct:fail("bin/erlpy did not exit: ~s", [Acc])
    end.
