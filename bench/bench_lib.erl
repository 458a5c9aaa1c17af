%% @doc What the benchmarks share.
-module(bench_lib).
-export([main/2]).

%% @doc Runs `Run', then halts the VM: 0 on success, 1 if the benchmark
%% itself failed (missed targets are reported by the benchmark, not fatal).
-spec main(string(), fun(() -> ok)) -> no_return().
main(Name, Run) ->
    Status = try Run() of
                 ok -> 0
             catch Class:Reason:Stack ->
                     io:format(standard_error, "~s failed: ~p:~p~n~p~n", [Name, Class, Reason, Stack]),
                     1
             end,
    erlang:halt(Status).
