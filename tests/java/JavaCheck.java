// Test-only helper: lets the Rust tests compare their output with the JDK's own classes.
// Modes (stdin/stdout, one item per line, hex where bytes are involved):
//   write FILE   lines "KEYHEX VALUEHEX|-" -> HashMap<byte[],byte[]> written with ObjectOutputStream
//                 (as Kafka's FileOffsetBackingStore.save does)
//   read FILE    ObjectInputStream.readObject() of FILE -> lines "KEYHEX VALUEHEX|-"
//   doubles      lines of 16-hex-digit IEEE bits -> Double.toString
//   floats       lines of 8-hex-digit IEEE bits -> Float.toString
//   dates        lines of epoch millis -> "Date.toString()\tInstant.toString()"
//   utf8         lines of hex bytes -> hex of new String(bytes, UTF_8) re-encoded as UTF-8
import java.io.*;
import java.nio.charset.StandardCharsets;
import java.nio.file.*;
import java.time.Instant;
import java.util.*;

public class JavaCheck {
    public static byte[] unhex(String s) {
        byte[] b = new byte[s.length() / 2];
        for (int i = 0; i < b.length; i++) b[i] = (byte) Integer.parseInt(s.substring(2 * i, 2 * i + 2), 16);
        return b;
    }

    public static String hex(byte[] b) {
        StringBuilder sb = new StringBuilder();
        for (byte x : b) sb.append(String.format("%02x", x & 0xff));
        return sb.toString();
    }

    @SuppressWarnings("unchecked")
    public static void main(String[] args) throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        PrintStream out = new PrintStream(new FileOutputStream(FileDescriptor.out), true, "UTF-8");
        String line;
        switch (args[0]) {
            case "write": {
                HashMap<byte[], byte[]> raw = new HashMap<>();
                while ((line = in.readLine()) != null) {
                    if (line.isEmpty()) continue;
                    String[] kv = line.split(" ", -1);
                    raw.put(unhex(kv[0]), kv[1].equals("-") ? null : unhex(kv[1]));
                }
                try (ObjectOutputStream os = new ObjectOutputStream(Files.newOutputStream(Paths.get(args[1])))) {
                    os.writeObject(raw);
                }
                break;
            }
            case "read": {
                try (ObjectInputStream is = new ObjectInputStream(Files.newInputStream(Paths.get(args[1])))) {
                    Object obj = is.readObject();
                    if (!(obj instanceof HashMap)) throw new IllegalStateException("Expected HashMap but found " + obj.getClass());
                    for (Map.Entry<byte[], byte[]> e : ((HashMap<byte[], byte[]>) obj).entrySet()) {
                        out.println(hex(e.getKey()) + " " + (e.getValue() == null ? "-" : hex(e.getValue())));
                    }
                }
                break;
            }
            case "doubles":
                while ((line = in.readLine()) != null) out.println(Double.toString(Double.longBitsToDouble(Long.parseUnsignedLong(line, 16))));
                break;
            case "floats":
                while ((line = in.readLine()) != null) out.println(Float.toString(Float.intBitsToFloat(Integer.parseUnsignedInt(line, 16))));
                break;
            case "dates":
                while ((line = in.readLine()) != null) {
                    long ms = Long.parseLong(line);
                    out.println(new Date(ms).toString() + "\t" + Instant.ofEpochMilli(ms).toString());
                }
                break;
            case "utf8":
                while ((line = in.readLine()) != null) out.println(hex(new String(unhex(line), StandardCharsets.UTF_8).getBytes(StandardCharsets.UTF_8)));
                break;
            default:
                throw new IllegalArgumentException(args[0]);
        }
    }
}
