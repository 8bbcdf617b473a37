// Test-only helper: serializes JsonNodes with Jackson's ObjectMapper.writeValueAsBytes, the call
// Kafka's JsonSerializer makes for JsonConverter output. Input lines are hex; output lines are hex
// of the JSON bytes.
//   strings   UTF-8 text -> TextNode
//   doubles   16-hex-digit IEEE bits -> DoubleNode
//   floats    8-hex-digit IEEE bits -> FloatNode
//   binary    raw bytes -> BinaryNode
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import java.io.*;
import java.nio.charset.StandardCharsets;

public class JacksonCheck {
    public static void main(String[] args) throws Exception {
        ObjectMapper mapper = new ObjectMapper();
        JsonNodeFactory f = JsonNodeFactory.withExactBigDecimals(true);
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        PrintStream out = new PrintStream(new FileOutputStream(FileDescriptor.out), true, "UTF-8");
        String line;
        while ((line = in.readLine()) != null) {
            JsonNode node;
            switch (args[0]) {
                case "strings":
                    node = f.textNode(new String(JavaCheck.unhex(line), StandardCharsets.UTF_8));
                    break;
                case "doubles":
                    node = f.numberNode(Double.longBitsToDouble(Long.parseUnsignedLong(line, 16)));
                    break;
                case "floats":
                    node = f.numberNode(Float.intBitsToFloat(Integer.parseUnsignedInt(line, 16)));
                    break;
                case "binary":
                    node = f.binaryNode(JavaCheck.unhex(line));
                    break;
                default:
                    throw new IllegalArgumentException(args[0]);
            }
            out.println(JavaCheck.hex(mapper.writeValueAsBytes(node)));
        }
    }
}
