%% @private
%% @doc Receives Python's log records (python/erlpy_logging.py) and hands them
%% to the Erlang logger; on a worker node also what Python prints
%% (python/erlpy_stdio.py), written to `user'.  Python sends with `erlang.send', which never blocks;
%% this process registers its pid with the Python module when it starts.
%%
%% Anything may send to it, so a message is checked field by field and atoms
%% come only from the fixed tables below, never from the data.  When records
%% arrive faster than the logger takes them (more than ?MAX_QUEUE waiting),
%% they are dropped and counted, and the count is logged once the queue is
%% short again.  Events carry `domain => [python]'; the primary level (or
%% `logger:set_module_level(erlpy_python_log, Level)') filters them.
-module(erlpy_python_log).
-behaviour(gen_server).

-include_lib("kernel/include/logger.hrl").

-export([start_link/0, install/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-define(MAX_QUEUE, 10000).
-define(CALL_TIMEOUT, 5000).

%% @doc Starts the receiver, registered as `erlpy_python_log'.
-spec start_link() -> {ok, pid()} | ignore | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc Makes `erlpy_logging.Handler' Python's last-resort handler (once per
%% interpreter): records no handler of the app's own takes reach the Erlang
%% logger.  `erlpy_http' calls it for the apps it serves.  A failure is
%% logged as well as returned.
-spec install() -> ok | {error, term()}.
install() ->
    case py:call(any, erlpy_logging, install, [], #{}, #{timeout => ?CALL_TIMEOUT}) of
        {ok, _Handler} ->
            ok;
        {error, Reason} = Error ->
            logger:warning("Python logging not forwarded: ~tp", [Reason]),
            Error
    end.

%% @private
-spec init([]) -> {ok, non_neg_integer()}.
init([]) ->
    process_flag(trap_exit, true),
    register_receiver(),
    {ok, 0}.

%% Tells Python where to send.  Workers all busy (after a restart) is worth
%% another try; anything else (python/ missing) is said once.
register_receiver() ->
    case set_receiver(self(), ?CALL_TIMEOUT) of
        ok ->
            ok;
        {error, timeout} ->
            _ = erlang:send_after(1000, self(), register),
            ok;
        {error, Reason} ->
            logger:warning("Python logging not forwarded: ~tp", [Reason])
    end.

%% @private
-spec handle_call(term(), gen_server:from(), non_neg_integer()) -> {reply, {error, badarg}, non_neg_integer()}.
handle_call(_Request, _From, Dropped) ->
    {reply, {error, badarg}, Dropped}.

%% @private
-spec handle_cast(term(), non_neg_integer()) -> {noreply, non_neg_integer()}.
handle_cast(_Msg, Dropped) ->
    {noreply, Dropped}.

%% @private
-spec handle_info(term(), non_neg_integer()) -> {noreply, non_neg_integer()}.
handle_info({?MODULE, LevelNo, Text, Meta}, Dropped)
  when is_integer(LevelNo), is_binary(Text), is_map(Meta) ->
    case erlang:process_info(self(), message_queue_len) of
        {message_queue_len, N} when N > ?MAX_QUEUE ->
            {noreply, Dropped + 1};
        _ ->
            report_dropped(Dropped),
            %% The macro, so that logger:set_module_level(erlpy_python_log, L)
            %% lets Python's records through without lowering the primary level.
            ?LOG(level(LevelNo), "~ts", [Text], metadata(Meta)),
            {noreply, 0}
    end;
handle_info({erlpy_python_stdio, Text}, Dropped) when is_binary(Text) ->
    %% A worker node's print() (python/erlpy_stdio.py): `user' is relayed
    %% to the front node's standard output.
    case erlang:process_info(self(), message_queue_len) of
        {message_queue_len, N} when N > ?MAX_QUEUE ->
            {noreply, Dropped + 1};
        _ ->
            _ = io:put_chars(user, Text),
            {noreply, Dropped}
    end;
handle_info(register, Dropped) ->
    register_receiver(),
    {noreply, Dropped};
handle_info(_Other, Dropped) ->
    {noreply, Dropped}.

%% @private
-spec terminate(term(), non_neg_integer()) -> ok.
terminate(_Reason, Dropped) ->
    report_dropped(Dropped),
    _ = set_receiver(none, 2000),
    ok.

set_receiver(Pid, Timeout) ->
    case py:call(any, erlpy_logging, set_receiver, [Pid], #{}, #{timeout => Timeout}) of
        {ok, none} -> ok;
        {error, _} = Error -> Error
    end.

report_dropped(0) ->
    ok;
report_dropped(N) ->
    logger:warning("~b Python log records (or printed texts) dropped: the Erlang side fell behind", [N]).

%% Python's numeric levels: a custom level goes to the standard one below it.
level(N) when N >= 50 -> critical;
level(N) when N >= 40 -> error;
level(N) when N >= 30 -> warning;
level(N) when N >= 20 -> info;
level(_) -> debug.

metadata(Meta) ->
    maps:fold(fun(K, V, Acc) ->
                      case meta(K, V) of
                          {Key, Value} -> Acc#{Key => Value};
                          skip -> Acc
                      end
              end, #{domain => [python]}, Meta).

meta(<<"logger">>, V) when is_binary(V) -> {python_logger, V};
meta(<<"level_name">>, V) when is_binary(V) -> {python_level, V};
meta(<<"module">>, V) when is_binary(V) -> {python_module, V};
meta(<<"function">>, V) when is_binary(V) -> {python_function, V};
meta(<<"thread">>, V) when is_binary(V) -> {python_thread, V};
meta(<<"line">>, V) when is_integer(V), V >= 0 -> {line, V};
meta(<<"file">>, V) when is_binary(V) ->
    case unicode:characters_to_list(V) of
        File when is_list(File) -> {file, File};
        _ -> skip
    end;
meta(_, _) ->
    skip.
