%% @doc A streaming byte buffer: Erlang processes write, Python reads it as a
%% binary file (`erlang.PyBuffer', see docs/buffer.md).
%%
%% Pass the buffer in any term to `py:call/eval' and it arrives in Python as
%% an `erlang.PyBuffer'; Python code can start reading before the data is all
%% there, its blocking reads release the GIL.  The process that creates the
%% buffer is monitored: if it exits without `close/1', the stream is aborted
%% and blocked readers get `erlang.StreamAborted'.
-module(py_buffer).

-export([new/0, new/1, write/2, close/1, abort/2, info/1]).

-opaque buffer() :: py_nif:buffer().
-type options() :: #{content_length => non_neg_integer() | undefined,
                     max_unread => pos_integer(),
                     low_watermark => non_neg_integer(),
                     keep_consumed => boolean(),
                     line_limit => pos_integer(),
                     read_timeout => non_neg_integer() | infinity,
                     write_timeout => timeout()}.
-type write_error() :: closed | overflow | timeout | enomem.
-type info() :: #{written := non_neg_integer(), read_pos := non_neg_integer(),
                  unread := non_neg_integer(), eof := boolean(), aborted := boolean(),
                  reader_closed := boolean(), waiting_readers := non_neg_integer(),
                  memory := non_neg_integer(), content_length := non_neg_integer() | undefined,
                  seekable := boolean()}.
-export_type([buffer/0, options/0, info/0, write_error/0]).

%% @doc A buffer of unknown length (chunked).
-spec new() -> {ok, buffer()} | {error, enomem}.
new() ->
    new(#{}).

%% @doc A buffer with a declared length (`undefined': unknown), or options:
%% <ul>
%% <li>`content_length': total bytes; writing more is `{error, overflow}',
%%     and a stream closed short of it raises `erlang.StreamIncomplete'.</li>
%% <li>`max_unread': backpressure. When more bytes than this are unread,
%%     `write/2' waits (in a receive) until the reader has drained them
%%     to `low_watermark' (default `max_unread div 2').</li>
%% <li>`keep_consumed' (default `true'): keep bytes already read, so Python
%%     can seek back. `false' frees them: bounded memory, not seekable.</li>
%% <li>`line_limit': `readline()' raises `erlang.LineTooLong' past it.</li>
%% <li>`read_timeout' (ms): a read waiting longer raises `erlang.ReadTimeout'.</li>
%% <li>`write_timeout' (ms): how long `write/2' waits under backpressure.</li>
%% </ul>
-spec new(non_neg_integer() | undefined | options()) -> {ok, buffer()} | {error, enomem}.
new(undefined) ->
    new(#{});
new(Length) when is_integer(Length), Length >= 0 ->
    new(#{content_length => Length});
new(Opts) when is_map(Opts) ->
    Max = maps:get(max_unread, Opts, 0),
    (is_integer(Max) andalso Max >= 0) orelse error(badarg),
    [error(badarg) || K <- [read_timeout, write_timeout],
                      not is_timeout(maps:get(K, Opts, infinity))],
    Low = maps:get(low_watermark, Opts, Max div 2),
    Finite = maps:filter(fun(_, V) -> V =/= infinity end, Opts),
    py_nif:buffer_new(Finite#{low_watermark => Low});
new(_) ->
    error(badarg).

%% @doc Appends `Data' (a binary or iodata).  Returns `{error, closed}' after
%% `close/1' or `abort/2' or once Python closed the buffer, and `{error,
%% overflow}' past a declared length.  With `max_unread' set, waits for the
%% reader to catch up, up to the buffer's `write_timeout' option; then
%% `{error, timeout}' (the data was written, the wait gave up).
-spec write(buffer(), iodata()) -> ok | {error, write_error()}.
write(Buf, Data) when is_binary(Data) ->
    case py_nif:buffer_write(Buf, Data) of
        wait -> wait_drained(Buf, infinity);
        {wait, Timeout} -> wait_drained(Buf, Timeout);
        Result -> Result
    end;
write(Buf, Data) when is_list(Data) ->
    %% iolist_to_binary yields to the scheduler; big parts are then borrowed.
    Bin = try iolist_to_binary(Data) catch error:badarg -> error(badarg) end,
    write(Buf, Bin);
write(_Buf, _Data) ->
    error(badarg).

%% @doc Marks the end of data: readers get EOF after the bytes written.
-spec close(buffer()) -> ok | {error, closed}.
close(Buf) ->
    py_nif:buffer_close(Buf).

%% @doc Breaks the stream: Python readers (blocked or later) get
%% `erlang.StreamAborted' naming `Reason'; later writes get `{error, closed}'.
-spec abort(buffer(), atom()) -> ok.
abort(Buf, Reason) when is_atom(Reason) ->
    py_nif:buffer_abort(Buf, Reason);
abort(_Buf, _Reason) ->
    error(badarg).

%% @doc The buffer's state: bytes written, read position, unread bytes, EOF,
%% aborted, readers waiting, memory held.
-spec info(buffer()) -> info().
info(Buf) ->
    py_nif:buffer_info(Buf).

%% ------------------------------------------------------------------ internal

%% Waits until the reader has drained the buffer, the stream ended, or the
%% deadline.  The notification is one-shot and per buffer, so with several
%% writers waiting one may miss it: every 100 ms each re-checks by itself.
wait_drained(Buf, Timeout) ->
    Deadline = case Timeout of
                   infinity -> infinity;
                   _ -> erlang:monotonic_time(millisecond) + Timeout
               end,
    wait_drained(Buf, Deadline, erlang:unique_integer([positive])).

wait_drained(Buf, Deadline, Token) ->
    case py_nif:buffer_want_drain(Buf, Token) of
        ok -> ok;
        wait ->
            receive
                {py_buffer_drained, Token} -> ok
            after min(100, left(Deadline)) ->
                    _ = py_nif:buffer_cancel_drain(Buf),
                    receive {py_buffer_drained, Token} -> ok after 0 -> ok end,
                    case {py_nif:buffer_write(Buf, <<>>), Deadline, left(Deadline)} of
                        {ok, _, _} -> ok;
                        {{error, _}, _, _} -> ok; %% ended: the next write says so
                        {_Wait, D, 0} when D =/= infinity -> {error, timeout};
                        _ -> wait_drained(Buf, Deadline, erlang:unique_integer([positive]))
                    end
            end
    end.

left(infinity) -> 100;
left(Deadline) -> max(0, Deadline - erlang:monotonic_time(millisecond)).

is_timeout(infinity) -> true;
is_timeout(T) -> is_integer(T) andalso T >= 0 andalso T =< 16#ffffffff.
