# Plots of one ktls_loadgen run: gnuplot -e "dir='RUN_DIR'; storm=1" tools/loadgen/plot.gp
# (loadgen.sh runs it after every run when gnuplot is installed; storm=1 adds
# the latency plot, which has no points otherwise).
set terminal pngcairo size 900,420 noenhanced
set datafile separator "\t"
set datafile commentschars "#"
set datafile missing "-"
set grid
set key top left
set xlabel "seconds"

set output dir."/connections.png"
set title "connections up and handshakes done"
set ylabel "count"
plot dir."/timeline.tsv" using 1:2 with lines lw 2 title "up", \
     "" using 1:3 with lines lw 2 title "handshakes (cumulative)"

set output dir."/messages.png"
set title "messages per second"
set ylabel "msgs/s"
plot dir."/timeline.tsv" using 1:7 with lines lw 2 title "sent", \
     "" using 1:8 with lines lw 2 title "echoed"

stats dir."/target_vm.tsv" using 1 nooutput
if (STATS_records > 0) {
  set output dir."/target.png"
  set title "target node (stats helper)"
  set ylabel "MiB / processes / 100"
  set y2label "CPU % of one core"
  set y2tics
  plot dir."/target_vm.tsv" using 1:2 with lines lw 2 title "erlang:memory(total) MiB", \
       "" using 1:($3/100) with lines lw 2 title "processes / 100", \
       "" using 1:5 axes x1y2 with lines lw 2 title "CPU %"
}

if (exists("storm") && storm) {
  set output dir."/latency.png"
  set title "echo latency of each second"
  set ylabel "microseconds"
  unset y2label
  unset y2tics
  set logscale y
  plot dir."/timeline.tsv" using 1:9 with linespoints lw 2 title "p50", \
       "" using 1:10 with linespoints lw 2 title "p99"
}
