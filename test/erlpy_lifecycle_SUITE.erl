%% Application stop/start in one VM, repeatedly, with calls in between.
-module(erlpy_lifecycle_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-compile([export_all, nowarn_export_all]).

all() -> [restart_repeatedly, calls_refused_while_stopped, contexts_follow_app_env].

end_per_testcase(_, _Config) ->
    _ = application:stop(erlpy),
    ok = application:set_env(erlpy, contexts, 8).

restart_repeatedly(_) ->
    [begin
         {ok, _} = application:ensure_all_started(erlpy),
         ?assertEqual({ok, 3}, py:call(operator, add, [1, 2])),
         ok = py:exec(py:context(1), <<"x = 1">>),
         ?assertEqual({ok, 1}, py:eval(py:context(1), <<"x">>, #{})),
         ok = application:stop(erlpy),
         ok
     end || _ <- lists:seq(1, 5)].

calls_refused_while_stopped(_) ->
    {ok, _} = application:ensure_all_started(erlpy),
    ok = application:stop(erlpy),
    ?assertEqual({error, not_started}, py:call(operator, add, [1, 2])),
    {ok, _} = application:ensure_all_started(erlpy),
    ?assertEqual({ok, 3}, py:call(operator, add, [1, 2])),
    %% A fresh start gives contexts fresh namespaces.
    ok = py:exec(py:context(1), <<"leftover = 1">>),
    ok = py:exec(<<"shared_leftover = 1">>),
    ok = application:stop(erlpy),
    {ok, _} = application:ensure_all_started(erlpy),
    ?assertMatch({error, {python, <<"NameError">>, _, _}}, py:eval(py:context(1), <<"leftover">>, #{})),
    ?assertMatch({error, {python, <<"NameError">>, _, _}}, py:eval(<<"shared_leftover">>)).

contexts_follow_app_env(_) ->
    ok = application:set_env(erlpy, contexts, 3),
    {ok, _} = application:ensure_all_started(erlpy),
    ?assertEqual(3, py:contexts()),
    ?assertEqual({error, no_context}, py:call(py:context(4), operator, add, [1, 2])),
    ok = application:stop(erlpy),
    ok = application:set_env(erlpy, contexts, 12),
    {ok, _} = application:ensure_all_started(erlpy),
    ?assertEqual(12, py:contexts()),
    ?assertEqual({ok, 3}, py:call(py:context(12), operator, add, [1, 2])).
