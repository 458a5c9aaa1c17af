%% @private
%% @doc The command line's signal handler (a `gen_event' handler of
%% `erl_signal_server', in place of OTP's default one).
%%
%% A stop request comes either as SIGTERM sent to the node itself or as
%% SIGUSR2 from the `bin/erlpy' script, which takes SIGINT, SIGTERM and SIGHUP
%% for the node (the node cannot handle SIGINT: `os:set_signal/2' does not
%% take it, and erts' handler is the break menu, turned off with `+Bi').  The
%% first request stops gracefully (`init:stop/0': the application stops, its
%% servers finish the requests in flight); a second one from the same source
%% halts at once.  A signal sent to the whole process group reaches both the
%% node and the script, so it counts once per source, not twice.
-module(erlpy_cli_signals).
-behaviour(gen_event).

-export([install/0]).
-export([init/1, handle_event/2, handle_call/2, handle_info/2, terminate/2]).

%% @doc Replaces OTP's default handler.
-spec install() -> ok.
install() ->
    ok = os:set_signal(sigusr2, handle),
    ok = os:set_signal(sighup, ignore),
    ok = gen_event:add_handler(erl_signal_server, ?MODULE, []),
    _ = gen_event:delete_handler(erl_signal_server, erl_signal_handler, []),
    ok.

%% @private
-spec init([]) -> {ok, [atom()]}.
init([]) ->
    {ok, []}.

%% @private
-spec handle_event(atom(), [atom()]) -> {ok, [atom()]}.
handle_event(Signal, Seen) when Signal =:= sigterm; Signal =:= sigusr2 ->
    case lists:member(Signal, Seen) of
        true ->
            io:format(standard_error, "erlpy: stopping now~n", []),
            erlang:halt(1);
        false when Seen =:= [] ->
            io:format(standard_error, "erlpy: stopping gracefully (again to stop now)~n", []),
            ok = init:stop(),
            {ok, [Signal]};
        false ->
            {ok, [Signal | Seen]}
    end;
handle_event(sigquit, _Seen) ->
    erlang:halt(1);
handle_event(_Signal, Seen) ->
    {ok, Seen}.

%% @private
-spec handle_call(term(), [atom()]) -> {ok, ok, [atom()]}.
handle_call(_Request, Seen) ->
    {ok, ok, Seen}.

%% @private
-spec handle_info(term(), [atom()]) -> {ok, [atom()]}.
handle_info(_Info, Seen) ->
    {ok, Seen}.

%% @private
-spec terminate(term(), [atom()]) -> ok.
terminate(_Reason, _Seen) ->
    ok.
