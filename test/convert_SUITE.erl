%% Term <-> Python conversion: the table in docs/bridge.md, round trips,
%% opaque handles and deep nesting.
-module(convert_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-compile([export_all, nowarn_export_all]).

all() ->
    [python_types, round_trips, atoms, unicode_atom, map_keys, floats_special,
     big_integers, opaque_handles, handles_are_released, pids_and_refs,
     funs_and_ports_round_trip, deep_nesting_to_python, deep_nesting_from_python,
     long_flat_list, str_is_utf8_binary].

init_per_suite(Config) ->
    erlpy_test:start(Config).

end_per_suite(Config) ->
    erlpy_test:stop(Config).

%% What each Erlang term becomes in Python.
python_types(_) ->
    Cases = [{1, <<"int">>}, {1 bsl 100, <<"int">>}, {1.5, <<"float">>}, {<<"b">>, <<"bytes">>},
             {true, <<"bool">>}, {false, <<"bool">>}, {none, <<"NoneType">>},
             {undefined, <<"NoneType">>}, {ok, <<"Atom">>}, {[1], <<"list">>},
             {{1}, <<"tuple">>}, {#{}, <<"dict">>}, {self(), <<"Pid">>},
             {make_ref(), <<"Term">>}, {fun() -> ok end, <<"Term">>},
             {<<1:3>>, <<"Term">>}, {[1 | 2], <<"Term">>}],
    [?assertEqual({ok, Name}, py:eval(<<"type(x).__name__">>, #{x => T})) || {T, Name} <- Cases].

round_trips(_) ->
    Terms = [0, -1, 1 bsl 62, -(1 bsl 63), (1 bsl 64) - 1, 3.25, -0.0, <<>>, <<"bytes", 0, 255>>,
             true, false, none, ok, [], [1, [2, [3]]], {}, {a, {b, <<"c">>}},
             #{}, #{a => 1, <<"b">> => [2], 3 => {4}, {t, 1} => #{x => y}},
             lists:seq(1, 1000), binary:copy(<<"x">>, 100000)],
    [?assertEqual({ok, T}, py:call(bridge_helpers, identity, [T])) || T <- Terms],
    [?assertEqual({ok, T}, py:eval(<<"x">>, #{x => T})) || T <- Terms],
    %% undefined maps to None, which comes back as none.
    ?assertEqual({ok, none}, py:eval(<<"x">>, #{x => undefined})),
    %% bytearray becomes a binary too.
    ?assertEqual({ok, <<"ab">>}, py:eval(<<"bytearray(b'ab')">>)).

atoms(_) ->
    ?assertEqual({ok, true}, py:eval(<<"isinstance(x, str) and x == 'hello'">>, #{x => hello})),
    ?assertEqual({ok, <<"Atom('hello')">>}, py:eval(<<"repr(x)">>, #{x => hello})),
    ?assertEqual({ok, hello}, py:eval(<<"x">>, #{x => hello})),
    %% A plain str is a binary, not an atom.
    ?assertEqual({ok, <<"hello">>}, py:eval(<<"str(x)">>, #{x => hello})).

unicode_atom(_) ->
    A = binary_to_atom(<<"ünïcode_atom_λ"/utf8>>, utf8),
    ?assertEqual({ok, A}, py:eval(<<"x">>, #{x => A})),
    ?assertEqual({ok, <<"ünïcode_atom_λ"/utf8>>}, py:eval(<<"str(x)">>, #{x => A})).

map_keys(_) ->
    M = #{1 => a, 2.5 => b, <<"k">> => c, k => d, {1, 2} => e, false => f, none => g},
    ?assertEqual({ok, M}, py:eval(<<"x">>, #{x => M})),
    ?assertEqual({ok, 7}, py:eval(<<"len(x)">>, #{x => M})),
    %% Python's own rule: True == 1, so they are one dict key.
    ?assertEqual({ok, 1}, py:eval(<<"len(x)">>, #{x => #{1 => a, true => b}})),
    %% Two Python keys that become one Erlang key: the later one wins.
    ?assertEqual({ok, #{<<"a">> => 2}}, py:eval(<<"{'a': 1, b'a': 2}">>)),
    %% Unhashable keys are a Python error, not a crash.
    ?assertMatch({error, {python, <<"TypeError">>, _, _}}, py:eval(<<"x">>, #{x => #{[1] => 2}})).

floats_special(_) ->
    ?assertEqual({ok, [nan, inf, neg_inf]}, py:eval(<<"[float('nan'), float('inf'), -float('inf')]">>)).

big_integers(_) ->
    %% Around each boundary the conversion changes path at: 64-bit signed,
    %% 64-bit unsigned, bignum.
    Ints = [(1 bsl 63) - 1, 1 bsl 63, -(1 bsl 63), -(1 bsl 63) - 1, (1 bsl 64) - 1,
            1 bsl 64, -(1 bsl 64), (1 bsl 64) + 1, -(1 bsl 64) + 1, (1 bsl 128) - 1, 1 bsl 128,
            (1 bsl 1000) + 7, -(1 bsl 4000) - 3, 123456789012345678901234567890],
    [?assertEqual({ok, I}, py:eval(<<"x">>, #{x => I})) || I <- Ints],
    [?assertEqual({ok, integer_to_binary(I)}, py:eval(<<"str(x)">>, #{x => I})) || I <- Ints],
    ?assertEqual({ok, 1 bsl 200}, py:eval(<<"2 ** 200">>)),
    ?assertEqual({ok, -(1 bsl 200)}, py:eval(<<"-(2 ** 200)">>)),
    ?assertEqual({ok, (1 bsl 64) - 1}, py:eval(<<"2 ** 64 - 1">>)),
    ?assertEqual({ok, -(1 bsl 64) + 1}, py:eval(<<"-(2 ** 64) + 1">>)),
    ?assertEqual({ok, 1 bsl 64}, py:eval(<<"2 ** 64">>)),
    ?assertEqual({ok, 255 bsl 64}, py:eval(<<"255 << 64">>)),
    %% An int subclass converts by its value.
    ?assertEqual({ok, 1 bsl 70}, py:eval(<<"type('I', (int,), {})(2 ** 70)">>)).

opaque_handles(_) ->
    {ok, H} = py:call(bridge_helpers, make_tracked, [41]),
    ?assert(is_reference(H)),
    ?assertEqual({ok, 41}, py:call(bridge_helpers, value_of, [H])),
    %% Each crossing makes a new handle to the same object: compare in Python.
    {ok, H2} = py:eval(<<"x">>, #{x => H}),
    ?assertEqual({ok, true}, py:eval(<<"a is b">>, #{a => H, b => H2})),
    %% Handles nest inside other terms and come back as the same object.
    ?assertEqual({ok, true}, py:eval(<<"a[0] is b['k']">>, #{a => [H], b => #{k => H}})),
    {ok, Re} = py:call(re, compile, [<<"a+">>]),
    ?assertEqual({ok, <<"aaa">>}, py:eval(<<"r.match(b'aaab').group(0)">>, #{r => Re})).

handles_are_released(_) ->
    {ok, Before} = py:call(bridge_helpers, tracked_alive, []),
    Self = self(),
    %% The handles live only in this short-lived process.
    Pid = spawn(fun() ->
                        Hs = [element(2, py:call(bridge_helpers, make_tracked, [I])) || I <- lists:seq(1, 50)],
                        {ok, N} = py:call(bridge_helpers, tracked_alive, []),
                        Self ! {alive, N, length(Hs)}
                end),
    receive {alive, N, 50} -> ?assert(N >= Before + 50) end,
    wait_dead(Pid),
    erlang:garbage_collect(),
    erlpy_test:wait_until(fun() ->
                                  {ok, Now} = py:call(bridge_helpers, tracked_alive, []),
                                  Now =< Before
                          end).

wait_dead(Pid) ->
    erlpy_test:wait_until(fun() -> not is_process_alive(Pid) end).

pids_and_refs(_) ->
    Self = self(),
    Ref = make_ref(),
    ?assertEqual({ok, Self}, py:eval(<<"x">>, #{x => Self})),
    ?assertEqual({ok, Ref}, py:eval(<<"x">>, #{x => Ref})),
    ?assertEqual({ok, true}, py:eval(<<"a == b and hash(a) == hash(b)">>, #{a => Self, b => Self})),
    ?assertEqual({ok, true}, py:eval(<<"a == b and len({a, b}) == 1">>, #{a => Ref, b => Ref})),
    ?assertEqual({ok, false}, py:eval(<<"a == b">>, #{a => Ref, b => make_ref()})),
    {ok, Repr} = py:eval(<<"repr(x)">>, #{x => Self}),
    ?assertMatch(<<"<erlang.Pid <", _/binary>>, Repr),
    ?assertMatch({error, {python, <<"TypeError">>, _, _}}, py:eval(<<"type(x)()">>, #{x => Self})).

funs_and_ports_round_trip(_) ->
    F = fun(X) -> X + 1 end,
    Port = hd(erlang:ports()),
    {ok, [F2, Port2, Improper]} = py:eval(<<"x">>, #{x => [F, Port, [a | b]]}),
    ?assertEqual(3, F2(2)),
    ?assertEqual(Port, Port2),
    ?assertEqual([a | b], Improper).

deep_nesting_to_python(_) ->
    Deep = lists:foldl(fun(_, Acc) -> [Acc] end, [], lists:seq(1, 100000)),
    ?assertEqual({error, too_deep}, py:eval(<<"1">>, #{x => Deep})),
    DeepTuple = lists:foldl(fun(_, Acc) -> {Acc} end, {}, lists:seq(1, 100000)),
    ?assertEqual({error, too_deep}, py:call(builtins, len, [DeepTuple])),
    %% A depth the converter accepts still works.
    Ok = lists:foldl(fun(_, Acc) -> [Acc] end, [], lists:seq(1, 500)),
    ?assertEqual({ok, Ok}, py:eval(<<"x">>, #{x => Ok})).

deep_nesting_from_python(_) ->
    ?assertEqual({error, too_deep}, py:call(bridge_helpers, nested_list, [100000])),
    ?assertEqual({ok, 1}, py:eval(<<"1">>)).

long_flat_list(_) ->
    L = lists:seq(1, 200000),
    ?assertEqual({ok, 200000}, py:call(builtins, len, [L])),
    ?assertEqual({ok, L}, py:eval(<<"list(range(1, 200001))">>)).

str_is_utf8_binary(_) ->
    ?assertEqual({ok, <<"héllo ✓"/utf8>>}, py:eval(<<"'h\\xe9llo \\u2713'">>)),
    %% A lone surrogate cannot be UTF-8: a Python error, not a crash.
    ?assertMatch({error, {python, <<"UnicodeEncodeError">>, _, _}}, py:eval(<<"'\\ud800'">>)).
