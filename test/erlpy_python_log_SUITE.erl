%% Python's logging reaches the Erlang logger (python/erlpy_logging.py and
%% src/erlpy_python_log.erl): levels, metadata, tracebacks, the default
%% installation for served apps and its opt-out, hostile messages.
-module(erlpy_python_log_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-compile([export_all, nowarn_export_all]).

all() ->
    [levels_and_metadata, exception_text, served_app_logs_by_default, opt_out,
     receiver_restart_registers_again, hostile_messages_ignored].

init_per_suite(Config) ->
    erlpy_test:start(Config).

end_per_suite(Config) ->
    erlpy_test:stop(Config).

%% A logger handler (this module's log/2) that sends Python's events here.
init_per_testcase(_Case, Config) ->
    ok = logger:add_handler(python_capture, ?MODULE, #{config => #{pid => self()}}),
    ok = logger:set_module_level(erlpy_python_log, all),
    Config.

end_per_testcase(_Case, _Config) ->
    _ = logger:unset_module_level(erlpy_python_log),
    _ = logger:remove_handler(python_capture),
    ok.

log(#{level := Level, msg := Msg, meta := #{domain := [python]} = Meta}, #{config := #{pid := Pid}}) ->
    Text = case Msg of
               {Format, Args} when is_list(Format) -> unicode:characters_to_binary(io_lib:format(Format, Args));
               {string, S} -> unicode:characters_to_binary(S);
               Other -> Other
           end,
    Pid ! {python_log, Level, Text, Meta};
log(_Event, _Config) ->
    ok.

next_record() ->
    receive {python_log, Level, Text, Meta} -> {Level, Text, Meta}
    after 10000 -> ct:fail(no_python_log_record)
    end.

%% A logger of its own with an explicit Handler, propagation off.
py_logger(Name) ->
    ok = py:exec(iolist_to_binary(
                   ["import logging, erlpy_logging\n",
                    "_l = logging.getLogger('", Name, "')\n",
                    "_l.setLevel(1)\n_l.propagate = False\n",
                    "_l.handlers[:] = [erlpy_logging.Handler()]\n"])).

levels_and_metadata(_) ->
    py_logger("t.levels"),
    ok = py:exec(<<"l = logging.getLogger('t.levels')\n"
                   "l.debug('d %d', 1); l.info('i'); l.warning('w'); l.error('e')\n"
                   "l.critical('c'); l.log(25, 'custom 25'); l.log(5, 'custom 5')">>),
    Expected = [{debug, <<"d 1">>}, {info, <<"i">>}, {warning, <<"w">>}, {error, <<"e">>},
                {critical, <<"c">>}, {info, <<"custom 25">>}, {debug, <<"custom 5">>}],
    Got = [next_record() || _ <- Expected],
    ?assertEqual(Expected, [{L, T} || {L, T, _} <- Got]),
    [{_, _, Meta} | _] = Got,
    ?assertMatch(#{python_logger := <<"t.levels">>, python_level := <<"DEBUG">>,
                   python_module := <<"<string>">>, python_function := <<"<module>">>,
                   line := 2, file := "<string>", python_thread := <<_/binary>>}, Meta),
    ?assertMatch(#{python_level := <<"Level 25">>}, element(3, lists:nth(6, Got))).

exception_text(_) ->
    py_logger("t.exc"),
    ok = py:exec(<<"try:\n    1 / 0\nexcept ZeroDivisionError:\n"
                   "    logging.getLogger('t.exc').exception('it failed')">>),
    {error, Text, _} = next_record(),
    ?assertMatch(<<"it failed\nTraceback (most recent call last):\n", _/binary>>, Text),
    ?assertNotEqual(nomatch, binary:match(Text, <<"ZeroDivisionError: division by zero">>)).

%% A served app's records reach the Erlang logger with no set-up in the app.
served_app_logs_by_default(_) ->
    {ok, _} = py:call(erlpy_logging, uninstall, []),
    {ok, Srv} = erlpy_http:start(#{app => <<"logging_apps:app">>, port => 0}),
    ?assertEqual("logged", get(Srv, "/hello")),
    {warning, <<"served /hello">>, Meta} = next_record(),
    ?assertMatch(#{python_logger := <<"logging_apps">>, python_function := <<"app">>}, Meta),
    ok = erlpy_http:stop(Srv).

%% python_logging => false installs nothing: the app's record goes to
%% Python's own last resort (stderr).  A marker sent after the request
%% through an explicit Handler is the first record to arrive.
opt_out(_) ->
    {ok, _} = py:call(erlpy_logging, uninstall, []),
    {ok, Srv} = erlpy_http:start(#{app => <<"logging_apps:app">>, port => 0,
                                   python_logging => false}),
    ?assertEqual("logged", get(Srv, "/quiet")),
    py_logger("t.marker"),
    ok = py:exec(<<"logging.getLogger('t.marker').warning('marker')">>),
    ?assertMatch({warning, <<"marker">>, _}, next_record()),
    ok = erlpy_http:stop(Srv).

%% The supervisor restarts the receiver, which registers its new pid.
receiver_restart_registers_again(_) ->
    Old = whereis(erlpy_python_log),
    exit(Old, kill),
    erlpy_test:wait_until(fun() -> is_pid(whereis(erlpy_python_log)) andalso
                                       whereis(erlpy_python_log) =/= Old end),
    py_logger("t.restart"),
    ok = py:exec(<<"logging.getLogger('t.restart').error('after restart')">>),
    ?assertMatch({error, <<"after restart">>, _}, next_record()).

%% Anyone can send to the receiver: bad fields are skipped, bad messages
%% ignored, no atom is made from the data.
hostile_messages_ignored(_) ->
    Pid = whereis(erlpy_python_log),
    Pid ! {erlpy_python_log, <<"50">>, <<"x">>, #{}},
    Pid ! {erlpy_python_log, 40, "not a binary", #{}},
    Pid ! garbage,
    Pid ! {erlpy_python_log, 40, <<"odd meta">>,
           #{<<"line">> => -1, <<"file">> => <<255, 0>>, <<"made_up_key_zq8">> => <<"v">>,
             <<"logger">> => 42, 7 => 8}},
    {error, <<"odd meta">>, Meta} = next_record(),
    %% file and line are the receiver's own (the logger macro's), not the data's.
    ?assertEqual([domain, file, gl, line, mfa, pid, time], lists:sort(maps:keys(Meta))),
    ?assertMatch(#{line := L} when L > 0, Meta),
    ?assertError(badarg, binary_to_existing_atom(<<"made_up_key_zq8">>)),
    ?assertEqual(Pid, whereis(erlpy_python_log)).

get(Srv, Path) ->
    os:cmd("curl -s --max-time 60 http://127.0.0.1:" ++ integer_to_list(erlpy_http:port(Srv)) ++ Path).
