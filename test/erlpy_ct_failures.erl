%% @doc A Common Test hook that prints every failed case, with its reason,
%% to the console as it happens.  scripts/test-asan runs the suites with
%% ct:run_test/1, which prints only counts: with this, a CI log that shows
%% the tail of the run still names what failed.  (rebar3 ct prints
%% failures itself.)
-module(erlpy_ct_failures).

-export([init/2, on_tc_fail/4]).

-spec init(term(), term()) -> {ok, undefined}.
init(_Id, _Opts) ->
    {ok, undefined}.

-spec on_tc_fail(module(), atom() | tuple(), term(), State) -> State.
on_tc_fail(Suite, Case, Reason, State) ->
    io:format(user, "~n*** FAILED ~p:~p~n~P~n", [Suite, Case, Reason, 40]),
    State.
